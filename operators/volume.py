"""Volumes as stacks of 2D slices: ``(B, 1, D, H, W)`` through any 2D operator, and the
finite difference along z that couples neighbouring slices."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LinearOperator
from .ct import parallel_beam_ct

__all__ = ["SliceStack", "parallel_beam_ct3d", "z_difference", "z_difference_adjoint"]


class SliceStack(LinearOperator):
    """Apply a 2D operator to every axial slice: ``(B, 1, D, *in2d) -> (B, 1, D, *out2d)``.

    ``slice_operator`` maps ``(b, 1, ...) -> (b, 1, ...)`` (e.g. parallel-beam CT of each
    slice: a volume scanned slice by slice, or the central rows of a parallel-beam 3D scan).
    The adjoint is the slice operator's adjoint per slice, so it is exact when that one is.
    """

    def __init__(self, slice_operator: LinearOperator, depth: int):
        if slice_operator.in_shape[0] != 1 or slice_operator.out_shape[0] != 1:
            raise ValueError("SliceStack needs a single-channel 2D operator")
        super().__init__((1, int(depth), *slice_operator.in_shape[1:]), (1, int(depth), *slice_operator.out_shape[1:]))
        self.slice_operator = slice_operator
        self.depth = int(depth)

    def _per_slice(self, fn, v: Tensor, out_tail: tuple[int, ...]) -> Tensor:
        batch = v.shape[0]
        flat = v.reshape(batch * self.depth, 1, *v.shape[3:])
        return fn(flat).reshape(batch, 1, self.depth, *out_tail)

    def forward(self, x: Tensor) -> Tensor:
        return self._per_slice(self.slice_operator.forward, x, tuple(self.out_shape[2:]))

    def adjoint(self, y: Tensor) -> Tensor:
        return self._per_slice(self.slice_operator.adjoint, y, tuple(self.in_shape[2:]))

    def norm(self, iterations: int = 50, *, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> float:
        """``||A||_2``: that of the slice operator, since the stack is block diagonal with identical
        blocks (power iteration on one slice, ``depth`` times cheaper than on the volume)."""
        return self.slice_operator.norm(iterations, generator=generator, dtype=dtype, device=device)


def parallel_beam_ct3d(image_size: int, depth: int, views: int, arc_degrees: float = 180.0,
                       start_degrees: float = 0.0, detector_count: int | None = None,
                       pixel_size: float = 1.0, backend: str = "auto", matrix_limit_mib: float = 1024) -> SliceStack:
    """Parallel-beam CT of a ``(B, 1, depth, N, N)`` volume: ``views`` angles over
    ``arc_degrees`` (180: sparse view; e.g. 90: a limited-angle wedge) for every slice. With the
    system-matrix backend (default) all ``B x depth`` slices go through one sparse product."""
    return SliceStack(parallel_beam_ct(image_size, views, arc_degrees, start_degrees, detector_count,
                                       pixel_size, backend, matrix_limit_mib), depth)


def z_difference(x: Tensor) -> Tensor:
    """Forward difference along z of ``(B, C, D, H, W)``: ``(B, C, D - 1, H, W)``."""
    return x[:, :, 1:] - x[:, :, :-1]


def z_difference_adjoint(g: Tensor) -> Tensor:
    """Adjoint of :func:`z_difference`: ``(B, C, D - 1, H, W) -> (B, C, D, H, W)``."""
    pad = torch.zeros_like(g[:, :, :1])
    return torch.cat([pad, g], dim=2) - torch.cat([g, pad], dim=2)
