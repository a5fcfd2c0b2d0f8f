"""Circular cone-beam CT by ray marching in torch: runs on CPU and CUDA, backprojection = exact transpose.

Geometry (that of astra's ``cone`` projector, :class:`operators.cone.ConeGeometry`), all in voxel
units: the ``(D, N, N)`` volume is indexed ``(z, y, x)``, centred at the origin, voxel ``(k, i, j)``
centred at ``(j - (N-1)/2, i - (N-1)/2, k - (D-1)/2)`` (no axis flipped). At angle ``a`` (radians) the
source sits at ``source_distance * (sin a, -cos a, 0)`` and the flat detector's centre at
``detector_distance * (-sin a, cos a, 0)``; detector columns step along ``spacing * (cos a, sin a, 0)``
and rows along ``spacing * (0, 0, 1)``, pixel ``(row, col)`` centred at ``centre + (col - (cols-1)/2) u
+ (row - (rows-1)/2) v`` (:func:`cone_vectors`: astra's ``cone_vec`` rows, tested against
``astra.geom_2vec``). Projections are laid out ``(rows, views, cols)`` as astra's.

Model: the volume is the trilinear interpolant of its voxels (zero outside, so it fades to zero half a
voxel beyond the volume's faces); each detector value is the line integral of that interpolant along
the ray from the source to the pixel centre, by the midpoint rule over the ray's chord through the
box ``|x|, |y| <= N/2 + 1/2``, ``|z| <= D/2 + 1/2``, in ``K`` equal steps of at most ``step`` voxels.
The trilinear weights are ``grid_sample``'s (``align_corners=False``: normalized coordinate
``2 x / N``); the backprojection applies the same weights transposed (``grid_sample``'s own input
gradient), so ``<A x, y> = <x, A^T y>`` to rounding. Rays are processed in blocks of views (and of
detector rows when one view is too large) of at most ``max_samples`` sample values, which bounds the
memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TorchConeProjector", "cone_vectors"]


def cone_vectors(geometry: Any) -> np.ndarray:
    """For an :class:`operators.cone.ConeGeometry` (not imported here: that module imports this one),
    ``(views, 12)`` float64 rows ``(source, detector centre, u, v)`` in voxels, the layout of
    astra's ``cone_vec`` geometry: ``u`` steps one detector column, ``v`` one detector row."""
    a = np.asarray(geometry.angles, dtype=np.float64)
    sin, cos, zero = np.sin(a), np.cos(a), np.zeros_like(a)
    sd, dd, ds = geometry.source_distance, geometry.detector_distance, geometry.detector_spacing
    return np.stack([sd * sin, -sd * cos, zero, -dd * sin, dd * cos, zero,
                     ds * cos, ds * sin, zero, zero, zero, zero + ds], axis=1)


class TorchConeProjector:
    """Projects ``(..., D, N, N)`` float tensors to ``(..., rows, views, cols)`` line integrals (in
    voxel units) and back, on the tensors' own device (CPU or CUDA), in their dtype when float64
    (float32 otherwise).

    ``step``: the largest sample spacing along a ray, in voxels. ``max_samples``: the most sample
    values (times the batch, plus the sample coordinates) held at once.
    """

    def __init__(self, geometry: Any, step: float = 0.5, max_samples: int = 1 << 23):
        if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
            raise ValueError(f"cone beam: step must be a positive number of voxels, got {step!r}")
        if not (isinstance(max_samples, int) and max_samples >= 1):
            raise ValueError(f"cone beam: max_samples must be a positive integer, got {max_samples!r}")
        self.geometry = geometry
        self.step = float(step)
        self.max_samples = max_samples
        self._vectors = cone_vectors(geometry)
        n, d = geometry.image_size, geometry.depth
        self._half = (n / 2 + 0.5, n / 2 + 0.5, d / 2 + 0.5)  # where the interpolant reaches zero
        self._longest = math.dist((0, 0, 0), self._half) * 2  # no chord is longer than the box diagonal

    # --- public -------------------------------------------------------------------
    def project(self, x: Tensor) -> Tensor:
        """Line integrals, ``(..., D, N, N) -> (..., rows, views, cols)``."""
        g = self.geometry
        volume, lead, dtype = self._items(x, (g.depth, g.image_size, g.image_size))
        batch = volume.shape[1]
        out = volume.new_zeros((batch, g.detector_rows, len(g.angles), g.detector_cols))
        for views, rows in self._blocks(batch):
            grid, h = self._rays(views, rows, volume.device, volume.dtype)
            samples = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            values = samples[0, :, 0].sum(-1) * h.reshape(1, -1)  # (batch, rays)
            out[:, rows, views] = values.reshape(batch, -1, *h.shape[1:]).transpose(1, 2)
        return out.reshape(*lead, *out.shape[1:]).to(dtype)

    def backproject(self, y: Tensor) -> Tensor:
        """The transpose of :meth:`project`, ``(..., rows, views, cols) -> (..., D, N, N)``."""
        g = self.geometry
        sino, lead, dtype = self._items(y, (g.detector_rows, len(g.angles), g.detector_cols))
        batch = sino.shape[1]
        volume = sino.new_zeros((1, batch, g.depth, g.image_size, g.image_size))
        for views, rows in self._blocks(batch):
            grid, h = self._rays(views, rows, volume.device, volume.dtype)
            weights = sino[0, :, rows, views].transpose(1, 2).reshape(batch, -1) * h.reshape(1, -1)
            grad = weights[None, :, None, :, None].expand(1, batch, 1, *grid.shape[2:4]).contiguous()
            volume += torch.ops.aten.grid_sampler_3d_backward(grad, volume, grid, 0, 0, False, [True, False])[0]
        return volume[0].reshape(*lead, *volume.shape[2:]).to(dtype)

    # --- helpers ------------------------------------------------------------------
    @staticmethod
    def _items(data: Tensor, shape: tuple[int, int, int]) -> tuple[Tensor, tuple[int, ...], torch.dtype]:
        """``data (..., *shape)`` as ``(1, B, *shape)`` (the batch as channels: one grid serves all)."""
        if not isinstance(data, Tensor) or tuple(data.shape[-3:]) != shape or data.is_complex():
            got = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(f"cone beam: expected a real tensor (..., {', '.join(map(str, shape))}), got {got}")
        work = torch.float64 if data.dtype == torch.float64 else torch.float32
        lead = tuple(data.shape[:-3])
        return data.detach().to(work).reshape(1, -1, *shape), lead, data.dtype

    def _blocks(self, batch: int) -> Iterator[tuple[slice, slice]]:
        """``(views, rows)`` slices covering the detector, each of at most ``max_samples`` values."""
        g = self.geometry
        per_ray = math.ceil(self._longest / self.step) * (batch + 3)  # samples per channel + coordinates
        per_view = g.detector_rows * g.detector_cols * per_ray
        if per_view <= self.max_samples:
            count = self.max_samples // per_view
            for start in range(0, len(g.angles), count):
                yield slice(start, min(start + count, len(g.angles))), slice(0, g.detector_rows)
            return
        count = max(1, self.max_samples // (g.detector_cols * per_ray))
        for view in range(len(g.angles)):
            for start in range(0, g.detector_rows, count):
                yield slice(view, view + 1), slice(start, min(start + count, g.detector_rows))

    def _rays(self, views: slice, rows: slice, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The sample grid ``(1, 1, rays, K, 3)`` (``grid_sample``'s normalized ``x, y, z``) of the
        block's rays, ordered ``(views, rows, cols)``, and each ray's step length ``(views, rows, cols)``
        (0 for rays that miss the volume)."""
        g = self.geometry
        vec = torch.as_tensor(self._vectors[views], dtype=torch.float64, device=device)
        source, centre, u, v = (vec[:, None, None, i:i + 3] for i in (0, 3, 6, 9))  # (views, 1, 1, 3)
        row = torch.arange(rows.start, rows.stop, dtype=torch.float64, device=device) - (g.detector_rows - 1) / 2
        col = torch.arange(g.detector_cols, dtype=torch.float64, device=device) - (g.detector_cols - 1) / 2
        pixel = centre + col[None, None, :, None] * u + row[None, :, None, None] * v  # (views, rows, cols, 3)
        direction = pixel - source
        direction = direction / direction.norm(dim=-1, keepdim=True)
        # slab method: the ray's parameter interval inside the box |p_i| <= half_i
        half = torch.tensor(self._half, dtype=torch.float64, device=device)
        tiny = torch.where(direction < 0, -1e-300, 1e-300)  # axis-parallel rays: no division by zero
        safe = torch.where(direction.abs() < 1e-300, tiny, direction)
        t1, t2 = (-half - source) / safe, (half - source) / safe
        enter = torch.minimum(t1, t2).amax(dim=-1).clamp(min=0)  # rays start at the source
        chord = (torch.maximum(t1, t2).amin(dim=-1) - enter).clamp(min=0)
        steps = (chord / self.step).ceil().clamp(min=1)  # per ray, so blocks do not change the sums
        h = chord / steps
        count = int(steps.max())  # shorter rays march on past their exit, where the volume is 0
        offset = (torch.arange(count, dtype=dtype, device=device) + 0.5) * h.to(dtype)[..., None]  # past entry
        scale = torch.tensor([2 / g.image_size, 2 / g.image_size, 2 / g.depth], dtype=torch.float64, device=device)
        start = ((source + enter[..., None] * direction) * scale).to(dtype)
        stride = (direction * scale).to(dtype)
        grid = torch.addcmul(start[..., None, :], offset[..., None], stride[..., None, :])  # (views, rows, cols, K, 3)
        return grid.reshape(1, 1, -1, count, 3), h.to(dtype)
