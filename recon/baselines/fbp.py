"""Filtered back-projection for the parallel- and fan-beam CT operators of ``operators.ct``.

Both geometries use a pixel-driven, linearly interpolating torch backprojector that follows
the operator's geometry exactly (see the ``operators.ct`` docstring), so FBP runs on CPU and
CUDA alike. The filter is the spatially discretised ramp (Ram-Lak) kernel
``h[0] = 1/4, h[n odd] = -1/(pi n)^2, h[n even] = 0`` (per unit spacing), applied by FFT with
zero padding to a power of two >= 2 x detectors, so it has no DC bias or wrap-around;
``"hann"`` multiplies it by a Hann window. Both are cut off at ``frequency_cutoff`` x Nyquist.

Angular normalisation (``V`` views, angular step ``delta`` = span of the angles / (V - 1),
arc = V delta):

* parallel beam: each view has weight ``min(arc, pi) / V``. A 180 degree (or 360 degree)
  sparse-view scan is thus normalised by the step per covered direction, and a limited-angle
  wedge by its own step ``delta`` (the missing wedge is missing, the rest keeps its scale;
  hence a W degree wedge reconstructs the image mean at only about W / 180 of its value).
* fan beam: the full-scan formula with weight ``delta / 2`` per view (Kak & Slaney, flat
  detector: cosine pre-weighting, ramp filter on the detector scaled to the rotation centre,
  ``1 / U^2`` distance weighting). Exact for a 360 degree scan; short scans (no Parker
  weights) are approximate.

The sinogram is divided by the operator's ``pixel_size`` so the result is in the image's
units (e.g. 1/cm).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from operators.ct import CTGeometry

_FILTERS = ("ramp", "hann")
_CHUNK_ELEMENTS = 1 << 21  # views x pixels handled at once by the backprojector


class FBP:
    """Filtered back-projection ``FBP(filter, frequency_cutoff)(y, physics) -> x``.

    ``y`` is ``(B, C, views, detectors)``; ``physics`` a ``ParallelBeamCT`` or ``FanBeamCT``
    (anything with a :class:`~operators.ct.CTGeometry` ``geometry``). Returns
    ``(B, C, N, N)`` in the image's units. ``nfe`` (network evaluations) is 0.
    """

    nfe = 0

    def __init__(self, filter: str = "ramp", frequency_cutoff: float = 1.0):
        if filter not in _FILTERS:
            raise ValueError(f"unknown FBP filter {filter!r}; choose one of {_FILTERS}")
        if not 0.0 < frequency_cutoff <= 1.0:
            raise ValueError(f"frequency_cutoff must be in (0, 1], got {frequency_cutoff}")
        self.filter = filter
        self.frequency_cutoff = float(frequency_cutoff)

    def __call__(self, y: Tensor, physics: torch.nn.Module, **_: object) -> Tensor:
        geometry: CTGeometry = physics.geometry
        views, detectors = len(geometry.angles), geometry.detector_count
        if y.shape[-2:] != (views, detectors):
            raise ValueError(
                f"sinogram of shape {tuple(y.shape)} does not match {views} views x {detectors} detectors"
            )
        p = y.reshape(-1, views, detectors) / geometry.pixel_size
        spacing = geometry.detector_spacing
        if geometry.kind == "fan":
            magnification = (geometry.source_distance + geometry.detector_distance) / geometry.source_distance
            spacing = spacing / magnification  # detector sampling at the rotation centre
            p = p * _cosine_weights(geometry, p.device, p.dtype)
        q = self.filter_projections(p, spacing)
        x = _angular_weight(geometry) * backproject(q, geometry)
        return x.reshape(*y.shape[:-2], geometry.image_size, geometry.image_size)

    def filter_projections(self, p: Tensor, spacing: float) -> Tensor:
        """Filter ``(..., detectors)`` projections sampled every ``spacing`` pixels."""
        detectors = p.shape[-1]
        size = 2 ** math.ceil(math.log2(2 * detectors))
        response = self._response(size).to(p.device, p.dtype)
        spectrum = torch.fft.rfft(p, n=size, dim=-1) * response
        return torch.fft.irfft(spectrum, n=size, dim=-1)[..., :detectors] / spacing

    def _response(self, size: int) -> Tensor:
        """Real frequency response ``(size // 2 + 1,)`` of the filter kernel."""
        n = torch.arange(size, dtype=torch.float64)
        n = torch.where(n > size // 2, n - size, n)
        kernel = torch.where(n % 2 == 1, -1.0 / (math.pi * n) ** 2, torch.zeros_like(n))
        kernel[0] = 0.25
        response = torch.fft.rfft(kernel).real
        frequency = torch.fft.rfftfreq(size, dtype=torch.float64) / 0.5  # 1 = Nyquist
        if self.filter == "hann":
            response = response * 0.5 * (1.0 + torch.cos(math.pi * frequency / self.frequency_cutoff))
        return torch.where(frequency <= self.frequency_cutoff, response, torch.zeros_like(response))

    def __repr__(self) -> str:
        return f"FBP(filter={self.filter!r}, frequency_cutoff={self.frequency_cutoff})"


def _angular_weight(geometry: CTGeometry) -> float:
    """Per-view quadrature weight (see the module docstring)."""
    angles = geometry.angles
    views = len(angles)
    full = math.pi if geometry.kind == "parallel" else 2.0 * math.pi
    arc = views * (max(angles) - min(angles)) / (views - 1) if views > 1 else full
    return min(arc, math.pi) / views if geometry.kind == "parallel" else arc / (2.0 * views)


def _detector_offsets(geometry: CTGeometry, device: torch.device) -> Tensor:
    """Bin centres ``(detectors,)`` in pixels along the detector, float64."""
    k = torch.arange(geometry.detector_count, dtype=torch.float64, device=device)
    return (k - (geometry.detector_count - 1) / 2) * geometry.detector_spacing


def _cosine_weights(geometry: CTGeometry, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Fan-beam pre-weights ``cos(gamma)`` per detector bin, ``(detectors,)``."""
    reach = geometry.source_distance + geometry.detector_distance
    u = _detector_offsets(geometry, device)
    return (reach / torch.sqrt(reach**2 + u**2)).to(dtype)


def backproject(q: Tensor, geometry: CTGeometry) -> Tensor:
    """Pixel-driven backprojection ``(M, views, detectors) -> (M, N, N)`` (no angular weight).

    Each pixel takes, per view, the linear interpolation of ``q`` at the detector position of
    the ray through its centre (zero beyond the detector); fan beam also weights by
    ``(source_distance / depth)^2`` (the ``1 / U^2`` factor).
    """
    m, views, detectors = q.shape
    n = geometry.image_size
    device, dtype = q.device, q.dtype
    coords = torch.arange(n, dtype=dtype, device=device) - (n - 1) / 2
    px = coords.repeat(n)  # row-major pixel centres, x = column offset
    py = -coords.repeat_interleave(n)  # y up: row 0 at the top
    angles = torch.tensor(geometry.angles, dtype=torch.float64, device=device)
    image = q.unsqueeze(0)  # (1, M, views, detectors): items share the sampling grid
    out = torch.zeros(m, n * n, dtype=dtype, device=device)
    chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    for start in range(0, views, chunk):
        theta = angles[start : start + chunk, None]
        cos, sin = torch.cos(theta).to(dtype), torch.sin(theta).to(dtype)
        u = px * cos + py * sin  # (views, N^2): offset along (cos, sin)
        if geometry.kind == "fan":
            depth = geometry.source_distance - (px * sin - py * cos)  # along the central ray from the source
            u = (geometry.source_distance + geometry.detector_distance) * u / depth
        rows = theta.shape[0]
        grid_x = u / (geometry.detector_spacing * (detectors - 1) / 2)
        grid_y = torch.linspace(-1.0, 1.0, rows, dtype=dtype, device=device)[:, None].expand_as(grid_x)
        grid = torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0)
        sampled = F.grid_sample(image[:, :, start : start + rows], grid, align_corners=True)[0]
        if geometry.kind == "fan":
            sampled = sampled * (geometry.source_distance / depth) ** 2
        out += sampled.sum(dim=1)
    return out.reshape(m, n, n)
