"""Gaussian blur as a separable operator with an explicit boundary rule and exact adjoint."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .resampling import SeparableOperator

__all__ = ["BOUNDARIES", "GaussianBlur", "filter_matrix", "gaussian_kernel"]

BOUNDARIES = ("reflect", "circular", "zero")


def gaussian_kernel(sigma: float, kernel_size: int | None = None) -> Tensor:
    """Normalised 1D Gaussian taps, float64 ``(kernel_size,)``; default size ``2 ceil(3 sigma) + 1``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    size = 2 * math.ceil(3 * sigma) + 1 if kernel_size is None else int(kernel_size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {size}")
    taps = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def filter_matrix(kernel: Tensor, n: int, boundary: str = "reflect") -> Tensor:
    """``(n, n)`` float64 matrix of centred 1D filtering, ``y[i] = sum_k kernel[k] x[i + k - r]``.

    ``r = len(kernel) // 2`` (odd length): a correlation, equal to the convolution for the
    symmetric kernels used here.

    ``boundary``: ``"reflect"`` mirrors about the edge samples without repeating them
    (``x[-1] = x[1]``, as ``torch.nn.functional.pad(mode="reflect")``, applied as often as
    the kernel needs); ``"circular"`` wraps around; ``"zero"`` pads with zeros.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; choose from {BOUNDARIES}")
    radius = len(kernel) // 2
    out = torch.arange(n)[:, None].expand(n, len(kernel))
    src = out + torch.arange(-radius, radius + 1)[None]
    weights = kernel.double()[None].expand(n, -1)
    if boundary == "circular":
        src = src % n
    elif boundary == "reflect":
        period = max(2 * (n - 1), 1)
        src = src % period
        src = torch.where(src > n - 1, period - src, src)
    else:
        inside = (src >= 0) & (src < n)
        weights, src = weights * inside, src.clamp(0, n - 1)
    return torch.zeros(n, n, dtype=torch.float64).index_put_((out, src), weights, accumulate=True)


class GaussianBlur(SeparableOperator):
    """Convolution with a normalised, isotropic Gaussian: ``(B, C, H, W) -> (B, C, H, W)``.

    ``sigma`` and ``kernel_size`` are in pixels. The boundary rule (default ``"reflect"``,
    as the DPS reference's ReflectionPad2d + conv) is folded into the 1D matrices, so the
    adjoint is exact for each rule: ``"circular"`` and ``"zero"`` give a self-adjoint
    operator, and ``"circular"`` also preserves the image mean. Constants are preserved by
    ``"reflect"`` and ``"circular"``.

    Args:
        in_shape: ``(C, H, W)``.
        sigma: standard deviation in pixels.
        kernel_size: odd number of taps; default ``2 ceil(3 sigma) + 1``.
        boundary: ``"reflect"``, ``"circular"`` or ``"zero"``.
    """

    def __init__(self, in_shape: Sequence[int], sigma: float, kernel_size: int | None = None,
                 boundary: str = "reflect"):
        channels, height, width = (int(s) for s in in_shape)
        kernel = gaussian_kernel(sigma, kernel_size)
        super().__init__(filter_matrix(kernel, height, boundary), filter_matrix(kernel, width, boundary),
                         channels)
        self.sigma = float(sigma)
        self.boundary = boundary
