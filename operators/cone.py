"""Circular cone-beam CT of a volume: astra-toolbox's CUDA 3D projector on a GPU, a torch one anywhere.

:class:`ConeBeamCT` has two backends with the same geometry (:class:`ConeGeometry`, whose conventions
:mod:`operators.cone_torch` spells out) and the same ``(rows, views, cols)`` projection layout:
``"astra"``, astra's ``cuda3d`` projector, which needs a CUDA GPU and an astra build with CUDA (astra
has no CPU 3D projector) and says so when either is missing; and ``"torch"``
(:class:`~operators.cone_torch.TorchConeProjector`), ray marching through the trilinear interpolant
of the volume, on CPU or CUDA, whose backprojection is the exact transpose. ``"auto"`` takes astra
where it can run, torch elsewhere. Geometry in voxel units (isotropic voxels of side 1);
``voxel_size`` (e.g. cm) scales the line integrals, as for the 2D operators.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._astra import Backproject, Project, _delete_projectors, astra
from .base import LinearOperator
from .cone_torch import TorchConeProjector
from .ct import AngleLike, _angle_tuple

__all__ = ["CONE_BACKENDS", "ConeBeamCT", "ConeGeometry", "cone_beam_ct", "cone_beam_unavailable", "cone_geometry"]

CONE_BACKENDS = ("auto", "astra", "torch")


def cone_beam_unavailable() -> str | None:
    """Why astra's cone beam cannot run here (no CUDA GPU, or astra without CUDA), or ``None``
    (the torch backend runs everywhere)."""
    if not torch.cuda.is_available():
        return "cone-beam CT needs a CUDA GPU (astra-toolbox has no CPU 3D projector); none is available"
    if not astra.use_cuda():
        return "cone-beam CT needs astra-toolbox built with CUDA; the installed astra cannot use the GPU"
    return None


@dataclass(frozen=True)
class ConeGeometry:
    """A circular cone-beam scan of a ``(D, N, N)`` volume (z, y, x), flat detector, in voxels.

    ``source_distance`` (source to rotation axis) and ``detector_distance`` (axis to detector)
    in voxels; ``detector_spacing`` the detector pixel side in voxels; ``angles`` in radians.
    Axes, rotation and detector orientation are astra's ``cone`` geometry, written out in
    :mod:`operators.cone_torch` (:func:`~operators.cone_torch.cone_vectors`: the per-view vectors).
    """

    depth: int
    image_size: int
    angles: tuple[float, ...]
    detector_rows: int
    detector_cols: int
    detector_spacing: float
    source_distance: float
    detector_distance: float

    def astra_geometries(self) -> tuple[dict, dict]:
        """The astra (volume, projection) geometry dictionaries."""
        vol = astra.create_vol_geom(self.image_size, self.image_size, self.depth)
        proj = astra.create_proj_geom("cone", self.detector_spacing, self.detector_spacing, self.detector_rows,
                                      self.detector_cols, np.asarray(self.angles, dtype=np.float64),
                                      self.source_distance, self.detector_distance)
        return vol, proj


class _ConeProjector:
    """Owns the ``cuda3d`` projector of one geometry per GPU; projects ``(..., D, N, N)`` CUDA
    tensors to ``(..., rows, views, cols)`` (astra's layout) and back, on device memory."""

    def __init__(self, geometry: ConeGeometry):
        self.geometry = geometry
        self._vol, self._proj = geometry.astra_geometries()
        self._ids: dict[int, int] = {}
        self._finalizer = weakref.finalize(self, _delete_projectors, self._ids, "projector3d")

    def _projector(self, device: torch.device) -> int:
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in self._ids:
            self._ids[index] = astra.create_projector("cuda3d", self._proj, self._vol, options={"GPUindex": index})
        return self._ids[index]

    def project(self, x: Tensor) -> Tensor:
        g = self.geometry
        return self._apply(x, (g.detector_rows, len(g.angles), g.detector_cols), forward=True)

    def backproject(self, y: Tensor) -> Tensor:
        g = self.geometry
        return self._apply(y, (g.depth, g.image_size, g.image_size), forward=False)

    def _apply(self, data: Tensor, out_shape: tuple[int, int, int], forward: bool) -> Tensor:
        from astra.experimental import direct_BP3D, direct_FP3D

        device = data.device if data.is_cuda else torch.device("cuda")
        items = data.detach().to(device, torch.float32).reshape(-1, *data.shape[-3:]).contiguous()
        out = torch.zeros((items.shape[0], *out_shape), dtype=torch.float32, device=device)
        projector = self._projector(device)
        torch.cuda.synchronize(device)
        for item, target in zip(items, out):
            if forward:
                direct_FP3D(projector, item, target)
            else:
                direct_BP3D(projector, target, item)
        torch.cuda.synchronize(device)
        return out.reshape(*data.shape[:-3], *out_shape).to(data.device, data.dtype)


class ConeBeamCT(LinearOperator):
    """Cone-beam CT, float ``(B, 1, D, N, N) -> (B, 1, detector_rows, views, detector_cols)``.

    ``backend="astra"``: astra's ``cuda3d`` projection and backprojection on the GPU (CPU tensors
    are copied there and back); the backprojection is the transpose of the projection only up to
    interpolation differences (the GPU tests bound the mismatch); ``RuntimeError`` without a CUDA
    GPU or a CUDA build of astra. ``backend="torch"``: :class:`TorchConeProjector` on the input's
    own device, exact transpose; ``step`` (voxels along a ray) and ``max_samples`` (memory) are its
    settings. ``"auto"``: astra when :func:`cone_beam_unavailable` is ``None``, else torch.
    """

    def __init__(self, geometry: ConeGeometry, voxel_size: float = 1.0, backend: str = "auto",
                 step: float = 0.5, max_samples: int = 1 << 23):
        if backend not in CONE_BACKENDS:
            raise ValueError(f"cone beam: unknown backend {backend!r}; expected one of {', '.join(CONE_BACKENDS)}")
        reason = cone_beam_unavailable()
        if backend == "auto":
            backend = "astra" if reason is None else "torch"
        if backend == "astra" and reason is not None:
            raise RuntimeError(reason)
        super().__init__((1, geometry.depth, geometry.image_size, geometry.image_size),
                         (1, geometry.detector_rows, len(geometry.angles), geometry.detector_cols))
        self.geometry = geometry
        self.voxel_size = float(voxel_size)
        self.backend = backend
        self._projector = (_ConeProjector(geometry) if backend == "astra"
                           else TorchConeProjector(geometry, step, max_samples))

    def forward(self, x: Tensor) -> Tensor:
        return self.voxel_size * Project.apply(x, self._projector)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.voxel_size * Backproject.apply(y, self._projector)

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"volume=({g.depth}, {g.image_size}, {g.image_size}), views={len(g.angles)}, "
                f"detector=({g.detector_rows}, {g.detector_cols}), voxel_size={self.voxel_size}, "
                f"backend={self.backend}")


def cone_geometry(image_size: int, depth: int, views: int, arc_degrees: float = 360.0,
                  start_degrees: float = 0.0, source_distance: float | None = None,
                  detector_distance: float | None = None, angles: AngleLike | None = None) -> ConeGeometry:
    """A circular scan of a ``(depth, N, N)`` volume: ``views`` angles over ``arc_degrees`` (or
    explicit ``angles``, radians).

    Defaults (voxels): source ``2N`` from the axis, detector ``N`` behind it; detector pixels
    of one voxel times the magnification, enough of them to see the whole volume from every
    angle (the cylinder of radius ``N / sqrt(2)`` and height ``depth`` around the axis).
    """
    sd = 2.0 * image_size if source_distance is None else float(source_distance)
    dd = float(image_size) if detector_distance is None else float(detector_distance)
    radius = image_size / math.sqrt(2)
    if sd <= radius:
        raise ValueError(f"source_distance={sd} voxels lies inside the volume (radius {radius:.1f})")
    stretch = sd / (sd - radius)  # the voxels nearest the source project largest
    cols = 2 * math.ceil(radius * stretch) + 1
    rows = 2 * math.ceil(depth / 2 * stretch) + 1
    if angles is None:
        step = math.radians(arc_degrees) / views
        angles = [math.radians(start_degrees) + i * step for i in range(views)]
    return ConeGeometry(int(depth), int(image_size), _angle_tuple(angles), rows, cols, (sd + dd) / sd, sd, dd)


def cone_beam_ct(image_size: int, depth: int, views: int, arc_degrees: float = 360.0, start_degrees: float = 0.0,
                 source_distance: float | None = None, detector_distance: float | None = None,
                 pixel_size: float = 1.0, backend: str = "auto", step: float = 0.5,
                 max_samples: int = 1 << 23) -> ConeBeamCT:
    """:class:`ConeBeamCT` of :func:`cone_geometry`, isotropic voxels of side ``pixel_size``
    (``image_size``, ``depth`` and ``pixel_size`` are what a volume data source passes)."""
    return ConeBeamCT(cone_geometry(image_size, depth, views, arc_degrees, start_degrees, source_distance,
                                    detector_distance), pixel_size, backend, step, max_samples)
