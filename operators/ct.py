"""2D CT forward models (parallel and flat-detector fan beam) projected by astra-toolbox.

Coordinates. An ``N x N`` image covers the square [-1, 1]^2 (normalised units; N pixels span
2 units): x points right, y points UP. Row 0 is the top row (y = +1 side), column 0 the left
(x = -1). In pixel units, pixel (row i, column j) has centre ``x = j - (N-1)/2``,
``y = (N-1)/2 - i``.

Parallel beam. View angle theta (radians) measures
``p(theta, s) = integral f(s (cos theta, sin theta) + t (-sin theta, cos theta)) dt``:
theta = 0 integrates along y (columns) and s = x; theta = pi/2 integrates along x and s = y.
Detector bin k sits at ``s = (k - (D-1)/2) * detector_spacing`` pixels (spacing 1 pixel).

Fan beam (flat detector). At view angle theta the source is at
``source_distance * (sin theta, -cos theta)``, the detector centre at
``detector_distance * (-sin theta, cos theta)`` and bin k at offset
``u = (k - (D-1)/2) * detector_spacing`` along ``(cos theta, sin theta)`` on the detector. That
ray is the parallel-beam line ``(theta - gamma, source_distance * sin gamma)`` with
``gamma = atan(u / (source_distance + detector_distance))``; theta = 0 looks along +y like
parallel beam. Distances and spacings are in pixels.

These are astra's own conventions (verified against analytic line integrals), so no angle
or sign remapping happens. Units: the image is in 1/length (e.g. 1/cm), ``pixel_size`` in
length (cm); sinograms are dimensionless line integrals. Forward and adjoint are both scaled
by ``pixel_size`` so the adjoint stays exact. :data:`MU_WATER` ties Hounsfield units to these
attenuation units: ``mu = MU_WATER * (1 + HU / 1000)``.

Devices. By default astra computes the geometry's system matrix once (its CPU projectors) and
torch applies it on whatever device the image is on, the adjoint being its exact transpose
(``_matrix``); ``backend="astra"`` calls astra's projectors instead (``_astra``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._astra import AstraProjector, Backproject, CTGeometry, Project
from ._matrix import MatrixProjector, _sparse_csr, matrix_bytes_estimate, system_matrices
from .base import LinearOperator

AngleLike = Tensor | np.ndarray | Sequence[float]

MU_WATER = 0.193  # linear attenuation of water, 1/cm, at about 70 keV: 0 HU on the Hounsfield scale

__all__ = [
    "CTGeometry",
    "FanBeamCT",
    "MU_WATER",
    "ParallelBeamCT",
    "fan_beam_ct",
    "limited_angle_angles",
    "parallel_beam_ct",
    "sparse_view_angles",
]


def sparse_view_angles(views: int, arc_degrees: float = 180.0, start_degrees: float = 0.0) -> Tensor:
    """``views`` equally spaced angles (radians, float64) over ``arc_degrees``, endpoint excluded."""
    if isinstance(views, bool) or not isinstance(views, int):
        raise ValueError(f"views must be a positive integer, got {views!r}")
    if not isinstance(arc_degrees, (int, float)) or not isinstance(start_degrees, (int, float)):
        raise ValueError(f"arc_degrees and start_degrees must be numbers, got {arc_degrees!r}, {start_degrees!r}")
    if views < 1 or arc_degrees <= 0:
        raise ValueError(f"need views >= 1 and arc_degrees > 0, got {views} and {arc_degrees}")
    degrees = start_degrees + arc_degrees * torch.arange(views, dtype=torch.float64) / views
    return torch.deg2rad(degrees)


def limited_angle_angles(
    wedge_degrees: float, views: int | None = None, start_degrees: float = 0.0
) -> Tensor:
    """Angles (radians) of a ``wedge_degrees`` wedge; default one view per degree, endpoint excluded."""
    views = max(1, round(wedge_degrees)) if views is None else views
    return sparse_view_angles(views, wedge_degrees, start_degrees)


def _angle_tuple(angles: AngleLike) -> tuple[float, ...]:
    values = np.asarray(angles.detach().cpu() if isinstance(angles, Tensor) else angles, dtype=np.float64)
    values = values.reshape(-1)
    if values.size == 0:
        raise ValueError("CT needs at least one view angle")
    return tuple(float(a) for a in values)


BACKENDS = ("auto", "matrix", "astra")


class _AstraCT(LinearOperator):
    """Shared body of the CT operators: ``(B, C, N, N) -> (B, C, views, detectors)``.

    Buffers: ``angles`` (radians, float64). ``geometry`` is the :class:`CTGeometry`.

    ``backend``: ``"matrix"`` applies astra's system matrix with torch on the input's device
    (CPU or GPU), the whole batch in one sparse product, the adjoint its exact transpose
    (``operators._matrix``); ``"astra"`` calls astra's projectors slice by slice (exact
    adjoint on the CPU; on a GPU with a CUDA build of astra its ``cuda`` projector, whose
    adjoint is approximate); ``"auto"`` (default) is ``"matrix"`` unless the matrix would take
    more than ``matrix_limit_mib`` MiB (estimate: :func:`operators._matrix.matrix_bytes_estimate`).
    """

    def __init__(self, geometry: CTGeometry, backend: str = "auto", matrix_limit_mib: float = 1024):
        if backend not in BACKENDS:
            raise ValueError(f"CT backend={backend!r}: expected one of {BACKENDS}")
        n = geometry.image_size
        super().__init__((1, n, n), (1, len(geometry.angles), geometry.detector_count))
        self.geometry = geometry
        self.register_buffer("angles", torch.tensor(geometry.angles, dtype=torch.float64), persistent=False)
        if backend == "auto":
            fits = matrix_bytes_estimate(geometry) <= float(matrix_limit_mib) * 2**20
            backend = "matrix" if fits else "astra"
        self.backend = backend
        self._projector = MatrixProjector(geometry) if backend == "matrix" else AstraProjector(geometry)

    def forward(self, x: Tensor) -> Tensor:
        return self.geometry.pixel_size * Project.apply(x, self._projector)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.geometry.pixel_size * Backproject.apply(y, self._projector)

    def matrix(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """The system matrix as a sparse CSR tensor ``(views * detectors, N * N)`` in physical units
        (``pixel_size`` included): ``A(x)`` of one image is ``matrix @ x.flatten()``, rows view-major,
        columns row-major. The matrix backend's own (cached) weights, whatever ``backend`` is set."""
        w = system_matrices(self.geometry, device, dtype)[0]
        return _sparse_csr(w.crow_indices(), w.col_indices(), w.values() * self.geometry.pixel_size, w.shape)

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"image_size={g.image_size}, views={len(g.angles)}, detectors={g.detector_count}, "
            f"pixel_size={g.pixel_size}, backend={self.backend}"
        )


class ParallelBeamCT(_AstraCT):
    """Parallel-beam CT, float ``(B, 1, N, N) -> (B, 1, len(angles), detector_count)``.

    ``angles`` in radians. ``detector_count`` defaults to ``ceil(sqrt(2) N) + 1`` bins of one
    pixel, covering the image diagonal. ``pixel_size`` (e.g. cm) scales the line integrals.
    ``backend`` and ``matrix_limit_mib``: see the shared base (system matrix on any device by
    default).
    """

    def __init__(
        self, image_size: int, angles: AngleLike, detector_count: int | None = None, pixel_size: float = 1.0,
        backend: str = "auto", matrix_limit_mib: float = 1024,
    ):
        count = math.ceil(math.sqrt(2) * image_size) + 1 if detector_count is None else int(detector_count)
        geometry = CTGeometry("parallel", int(image_size), _angle_tuple(angles), count, 1.0, float(pixel_size))
        super().__init__(geometry, backend, matrix_limit_mib)


class FanBeamCT(_AstraCT):
    """Flat-detector fan-beam CT, float ``(B, 1, N, N) -> (B, 1, len(angles), detector_count)``.

    Defaults (pixels): ``source_distance = 2N`` (source to rotation centre),
    ``detector_distance = N`` (rotation centre to detector), ``detector_spacing`` such that
    bins are one pixel wide at the rotation centre (the magnification
    ``(source_distance + detector_distance) / source_distance``), and ``detector_count`` odd
    and just enough for the fan to cover the image's circumscribed circle (radius N / sqrt 2).
    """

    def __init__(
        self,
        image_size: int,
        angles: AngleLike,
        detector_count: int | None = None,
        source_distance: float | None = None,
        detector_distance: float | None = None,
        detector_spacing: float | None = None,
        pixel_size: float = 1.0,
        backend: str = "auto",
        matrix_limit_mib: float = 1024,
    ):
        n = int(image_size)
        source = 2.0 * n if source_distance is None else float(source_distance)
        detector = float(n) if detector_distance is None else float(detector_distance)
        radius = n / math.sqrt(2)
        if source <= radius or detector < 0:
            raise ValueError(f"source_distance must exceed the image radius {radius:.1f} px, got {source}")
        spacing = (source + detector) / source if detector_spacing is None else float(detector_spacing)
        if detector_count is None:
            half_width = (source + detector) * math.tan(math.asin(radius / source))
            detector_count = 2 * math.ceil(half_width / spacing) + 1
        geometry = CTGeometry(
            "fan", n, _angle_tuple(angles), int(detector_count), spacing, float(pixel_size), source, detector
        )
        super().__init__(geometry, backend, matrix_limit_mib)


def parallel_beam_ct(
    image_size: int,
    views: int,
    arc_degrees: float = 180.0,
    start_degrees: float = 0.0,
    detector_count: int | None = None,
    pixel_size: float = 1.0,
    backend: str = "auto",
    matrix_limit_mib: float = 1024,
) -> ParallelBeamCT:
    """Config factory: parallel beam with ``views`` equally spaced angles over ``arc_degrees``."""
    angles = sparse_view_angles(views, arc_degrees, start_degrees)
    return ParallelBeamCT(image_size, angles, detector_count, pixel_size, backend, matrix_limit_mib)


def fan_beam_ct(
    image_size: int,
    views: int,
    arc_degrees: float = 360.0,
    start_degrees: float = 0.0,
    detector_count: int | None = None,
    source_distance: float | None = None,
    detector_distance: float | None = None,
    detector_spacing: float | None = None,
    pixel_size: float = 1.0,
    backend: str = "auto",
    matrix_limit_mib: float = 1024,
) -> FanBeamCT:
    """Config factory: flat-detector fan beam with ``views`` equally spaced angles over ``arc_degrees``."""
    angles = sparse_view_angles(views, arc_degrees, start_degrees)
    return FanBeamCT(image_size, angles, detector_count, source_distance, detector_distance, detector_spacing,
                     pixel_size, backend, matrix_limit_mib)
