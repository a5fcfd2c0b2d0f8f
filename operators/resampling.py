"""Separable image operators ``y = M_h x M_w^T`` and downsampling (super-resolution).

A :class:`SeparableOperator` applies a 1D matrix along rows and another along columns of
``(B, C, H, W)`` images; its adjoint applies the transposes, so it is exact by construction,
for any boundary handling folded into the matrices. Matrices are stored in float64 and cast
to the input's dtype; the cost is ``O(C (h H W + h w W))`` per image, fine up to ~1k pixels
a side.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import LinearOperator

__all__ = ["Downsampling", "Resize", "SeparableOperator", "area_matrix", "bicubic_matrix", "downsampling", "resize_matrix"]


class SeparableOperator(LinearOperator):
    """``(B, C, H, W) -> (B, C, h, w)``, ``y = M_h x M_w^T`` per channel (real matrices).

    Args:
        rows: ``M_h``, ``(h, H)``.
        cols: ``M_w``, ``(w, W)``.
        channels: C.
    """

    def __init__(self, rows: Tensor, cols: Tensor, channels: int = 1):
        super().__init__((channels, rows.shape[1], cols.shape[1]), (channels, rows.shape[0], cols.shape[0]))
        self.register_buffer("rows", rows.double())
        self.register_buffer("cols", cols.double())

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("ih,bchw,jw->bcij", self.rows.to(x.dtype), x, self.cols.to(x.dtype))

    def adjoint(self, y: Tensor) -> Tensor:
        return torch.einsum("ih,bcij,jw->bchw", self.rows.to(y.dtype), y, self.cols.to(y.dtype))


def area_matrix(n: int, factor: int) -> Tensor:
    """``(n / factor, n)`` float64: each output sample averages ``factor`` inputs."""
    if factor < 1 or n % factor:
        raise ValueError(f"size {n} is not divisible by the factor {factor}")
    return torch.eye(n // factor, dtype=torch.float64).repeat_interleave(factor, dim=1) / factor


def bicubic_matrix(n: int, factor: int, a: float = -0.5) -> Tensor:
    """``(n / factor, n)`` float64 antialiased bicubic downsampling (PIL's convention).

    Output ``i`` sits at input coordinate ``c = (i + 1/2) factor`` (pixel centres at
    ``j + 1/2``); input ``j`` gets the Keys cubic (parameter ``a``) evaluated at
    ``(j + 1/2 - c) / factor``, i.e. a kernel stretched to ``4 factor`` taps. Taps outside
    the image are dropped and each row is renormalised to sum to 1. This equals
    ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``.
    """
    if factor < 1 or n % factor:
        raise ValueError(f"size {n} is not divisible by the factor {factor}")
    centres = (torch.arange(n // factor, dtype=torch.float64) + 0.5) * factor
    u = ((torch.arange(n, dtype=torch.float64) + 0.5)[None] - centres[:, None]).abs() / factor
    near = (a + 2) * u**3 - (a + 3) * u**2 + 1
    far = a * u**3 - 5 * a * u**2 + 8 * a * u - 4 * a
    weights = torch.where(u <= 1, near, torch.where(u < 2, far, torch.zeros_like(u)))
    return weights / weights.sum(dim=1, keepdim=True)


class Downsampling(SeparableOperator):
    """Downsampling by an integer factor: ``(B, C, H, W) -> (B, C, H/f, W/f)``.

    ``mode="area"``: the mean of each ``f x f`` block (adjoint: nearest-neighbour
    upsampling divided by ``f^2``). ``mode="bicubic"``: antialiased bicubic as PIL and
    ``interpolate(..., antialias=True)`` (:func:`bicubic_matrix`). Both keep constants.

    Args:
        in_shape: ``(C, H, W)``, H and W divisible by ``factor``.
        factor: integer downsampling factor (e.g. 2 or 4).
        mode: ``"area"`` or ``"bicubic"``.
    """

    def __init__(self, in_shape: Sequence[int], factor: int, mode: str = "area"):
        makers = {"area": area_matrix, "bicubic": bicubic_matrix}
        if mode not in makers:
            raise ValueError(f"unknown mode {mode!r}; choose from {sorted(makers)}")
        channels, height, width = (int(s) for s in in_shape)
        super().__init__(makers[mode](height, factor), makers[mode](width, factor), channels)
        self.factor = int(factor)
        self.mode = mode


def downsampling(image_size: int, factor: int = 4, mode: str = "area") -> Downsampling:
    """Downsampling of ``(B, 1, N, N)`` images, ``N = image_size`` pixels, by ``factor``
    (super-resolution)."""
    return Downsampling((1, image_size, image_size), factor, mode)


def resize_matrix(n_out: int, n_in: int) -> Tensor:
    """``(n_out, n_in)`` float64 resampling of a row of ``n_in`` cells onto ``n_out`` cells of the same
    extent (cell centres: input ``j + 1/2`` of ``n_in``, output ``i + 1/2`` of ``n_out``).

    Enlarging (``n_out > n_in``): linear interpolation between input centres, constant beyond
    the outer ones. Shrinking: each output is the mean of the input over its cell (exact
    overlap lengths), so no aliasing. Rows sum to 1 either way (constants are kept).
    """
    if n_out < 1 or n_in < 1:
        raise ValueError(f"sizes must be positive, got {n_out} and {n_in}")
    if n_out > n_in:
        position = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5).clamp(0, n_in - 1)
        left = position.floor().long().clamp(max=n_in - 2) if n_in > 1 else position.long()
        frac = position - left
        out = torch.zeros(n_out, n_in, dtype=torch.float64)
        rows = torch.arange(n_out)
        out[rows, left] += 1 - frac
        if n_in > 1:
            out[rows, left + 1] += frac
        return out
    edges_out = torch.arange(n_out + 1, dtype=torch.float64) * n_in / n_out  # in input cell units
    edges_in = torch.arange(n_in + 1, dtype=torch.float64)
    overlap = (torch.minimum(edges_out[1:, None], edges_in[None, 1:])
               - torch.maximum(edges_out[:-1, None], edges_in[None, :-1])).clamp(min=0)
    return overlap / overlap.sum(dim=1, keepdim=True)


class Resize(SeparableOperator):
    """Resampling of ``(B, C, h, w)`` images onto ``(B, C, H, W)`` covering the same field of view
    (:func:`resize_matrix` along each axis); the adjoint is exact (the transposes)."""

    def __init__(self, in_shape: Sequence[int], out_size: Sequence[int]):
        channels, height, width = (int(s) for s in in_shape)
        out_h, out_w = (int(s) for s in out_size)
        super().__init__(resize_matrix(out_h, height), resize_matrix(out_w, width), channels)
