"""astra-toolbox glue: projector lifetime and differentiable projection/backprojection.

All geometry here is in pixel units (pixel side = 1); callers scale by the physical pixel
size. Projection maps ``(..., N, N) -> (..., views, detectors)`` float tensors.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


class _LazyAstra:
    """``astra`` imported on first use: importing ``operators`` stays fast when no CT runs."""

    def __getattr__(self, name: str):
        import astra as module

        return getattr(module, name)


astra = _LazyAstra()


@dataclass(frozen=True)
class CTGeometry:
    """A 2D CT acquisition geometry (read by FBP).

    ``kind`` is ``"parallel"`` or ``"fan"`` (flat detector). ``angles`` are in radians.
    ``detector_spacing``, ``source_distance`` (source to rotation centre) and
    ``detector_distance`` (rotation centre to detector) are in pixels; the latter two are
    ``None`` for parallel beam. ``pixel_size`` is the physical pixel side (e.g. cm).
    """

    kind: str
    image_size: int
    angles: tuple[float, ...]
    detector_count: int
    detector_spacing: float
    pixel_size: float = 1.0
    source_distance: float | None = None
    detector_distance: float | None = None

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f"CT geometry: {what} (got {self})")

        if self.kind not in ("parallel", "fan"):
            raise bad(f"unknown kind {self.kind!r}; expected 'parallel' or 'fan'")
        if int(self.image_size) < 1 or int(self.detector_count) < 1 or not self.angles:
            raise bad("image_size, detector_count and the number of angles must be positive")
        if not np.all(np.isfinite(self.angles)):
            raise bad("angles must be finite")
        for name in ("detector_spacing", "pixel_size"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise bad(f"{name} must be positive and finite")
        if self.kind == "fan":
            sd, dd = self.source_distance, self.detector_distance
            if sd is None or dd is None or not (math.isfinite(sd) and sd > 0 and math.isfinite(dd) and dd >= 0):
                raise bad("fan beam needs a positive source_distance and a non-negative detector_distance")

    def astra_geometries(self) -> tuple[dict, dict]:
        """The astra (volume, projection) geometry dictionaries, in pixel units."""
        vol = astra.create_vol_geom(self.image_size, self.image_size)
        angles = np.asarray(self.angles, dtype=np.float64)
        if self.kind == "parallel":
            proj = astra.create_proj_geom("parallel", self.detector_spacing, self.detector_count, angles)
        else:  # "fan" (__post_init__ admits no other kind)
            proj = astra.create_proj_geom(
                "fanflat", self.detector_spacing, self.detector_count, angles,
                self.source_distance, self.detector_distance,
            )
        return vol, proj


# CPU projectors whose backprojection is the exact transpose of their projection
# (Joseph interpolation for parallel beam; line-length weights for fan beam, as accurate
# as strip_fanflat against analytic integrals here and 2-3x faster).
_CPU_PROJECTOR = {"parallel": "linear", "fan": "line_fanflat"}


def create_cpu_projector(geometry: CTGeometry, vol: dict, proj: dict) -> int:
    """astra's matched CPU projector for ``geometry``; astra's refusal becomes a ``ValueError``."""
    return _create(geometry, _CPU_PROJECTOR[geometry.kind], proj, vol)


def _create(geometry: CTGeometry, kind: str, proj: dict, vol: dict, **options) -> int:
    try:
        return astra.create_projector(kind, proj, vol, **options)
    except Exception as err:  # astra.log.AstraError; astra is imported lazily
        raise ValueError(f"astra cannot build a {kind!r} projector for {geometry}: {err}") from None


def _delete_projectors(ids: dict, module: str = "projector") -> None:
    """Free the astra projectors in ``ids`` (``module``: ``projector`` for 2D, ``projector3d``)."""
    for projector_id in ids.values():
        getattr(astra, module).delete(projector_id)
    ids.clear()


class AstraProjector:
    """Owns the astra projectors of one geometry and frees them with this object.

    The CT operators' ``backend="astra"`` (the default ``"auto"`` uses ``_matrix`` unless the
    system matrix would be too large). The CPU projector is matched (backprojection = exact
    transpose), one slice at a time. On CUDA tensors, when astra was built with CUDA, a
    per-GPU ``cuda`` projector works on device memory directly; its backprojection is only
    approximately the transpose (``benchmarks/ct_projector.py`` measures the mismatch).
    Otherwise CUDA tensors are projected on the CPU and copied back.
    """

    def __init__(self, geometry: CTGeometry):
        self.geometry = geometry
        self._vol, self._proj = geometry.astra_geometries()
        self._ids: dict[int | None, int] = {}  # None: CPU; int: CUDA device index
        self._finalizer = weakref.finalize(self, _delete_projectors, self._ids)

    def __reduce__(self):
        return AstraProjector, (self.geometry,)

    def _projector(self, device: torch.device) -> int:
        key = device.index if device.type == "cuda" else None
        if key not in self._ids:
            if key is None:
                self._ids[key] = create_cpu_projector(self.geometry, self._vol, self._proj)
            else:
                self._ids[key] = _create(self.geometry, "cuda", self._proj, self._vol, options={"GPUindex": key})
        return self._ids[key]

    def project(self, x: Tensor) -> Tensor:
        """Line integrals in pixel units, ``(..., N, N) -> (..., views, detectors)``."""
        shape = (len(self.geometry.angles), self.geometry.detector_count)
        return self._apply(x, shape, astra.projector.direct_FP)

    def backproject(self, y: Tensor) -> Tensor:
        """Transpose of :meth:`project`, ``(..., views, detectors) -> (..., N, N)``."""
        shape = (self.geometry.image_size, self.geometry.image_size)
        return self._apply(y, shape, astra.projector.direct_BP)

    def _apply(self, data: Tensor, out_shape: tuple[int, int], direct) -> Tensor:
        on_gpu = data.is_cuda and astra.use_cuda()
        work_device = data.device if on_gpu else torch.device("cpu")
        items = data.detach().to(work_device, torch.float32).reshape(-1, *data.shape[-2:]).contiguous()
        out = torch.empty((items.shape[0], *out_shape), dtype=torch.float32, device=work_device)
        projector = self._projector(work_device)
        if on_gpu:
            torch.cuda.synchronize(work_device)
        for item, target in zip(items, out):
            direct(projector, item, out=target)
        if on_gpu:
            torch.cuda.synchronize(work_device)
        return out.reshape(*data.shape[:-2], *out_shape).to(data.device, data.dtype)


class Project(torch.autograd.Function):
    """``y = P x`` with ``P`` an :class:`AstraProjector`; the backward pass is ``P^T``."""

    @staticmethod
    def forward(ctx, x: Tensor, projector: AstraProjector) -> Tensor:
        ctx.projector = projector
        return projector.project(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return Backproject.apply(grad, ctx.projector), None


class Backproject(torch.autograd.Function):
    """``x = P^T y``; the backward pass is ``P``."""

    @staticmethod
    def forward(ctx, y: Tensor, projector: AstraProjector) -> Tensor:
        ctx.projector = projector
        return projector.backproject(y)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return Project.apply(grad, ctx.projector), None
