"""Classical structured-noise removal: filter the measurement, then reconstruct.

* :class:`Destripe`: CT ring-artifact removal in the sinogram (the classic sinogram-mean
  correction). Each detector bin's mean over the views, minus a running median of those means
  along the detector axis, is the bin's offset and is subtracted. (A per-bin drift is not
  estimated: the object's own sinogram varies along the views far more than a drift does.)
* :class:`Notch`: removal of periodic interference. Fourier coefficients that exceed
  ``threshold`` times the median of their frequency ring (outside a low-frequency disc that
  holds the anatomy) are peaks; they and their neighbours are zeroed.
* :class:`Prefiltered`: ``reconstruct(filter(y), physics)``, or ``filter(y)`` itself when the
  operator is the identity (denoising).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Destripe", "Notch", "Prefiltered", "running_median"]


def running_median(v: Tensor, width: int) -> Tensor:
    """Median over a centred window of ``width`` (odd) samples along the last axis, reflected at the ends."""
    pad = width // 2
    padded = F.pad(v.reshape(-1, 1, v.shape[-1]), (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(v.shape)


class Destripe:
    """Remove per-detector offsets from sinograms ``(B, C, views, detectors)``.

    Args:
        width: running-median window along the detector axis (odd, bins). The median follows
            the object's view-averaged profile where that is smooth on this scale; features
            narrower than it (a sharp object edge) leak into the offset estimate.
    """

    def __init__(self, width: int = 9):
        if width < 3 or width % 2 == 0:
            raise ValueError(f"Destripe: width must be odd and >= 3, got {width}")
        self.width = int(width)

    def __call__(self, y: Tensor) -> Tensor:
        level = y.mean(dim=-2, keepdim=True)  # (..., 1, detectors)
        return y - (level - running_median(level, self.width))


class Notch:
    """Zero the interference peaks of images ``(B, C, H, W)`` in Fourier space.

    A coefficient is a peak when its magnitude exceeds ``threshold`` times the median
    magnitude of its frequency ring (same radius, one-bin wide): an image's spectrum falls off
    with radius, roughly alike in every direction, while a plane wave is a point on its ring.
    Peaks and their 8 neighbours (spectral leakage of a non-integer wavelength) are zeroed;
    frequencies within ``keep_radius`` (fraction of Nyquist) are never touched.

    Args:
        threshold: peak criterion, times the ring median.
        keep_radius: protected low-frequency disc, as a fraction of Nyquist.
    """

    def __init__(self, threshold: float = 4.0, keep_radius: float = 0.08):
        if threshold <= 1 or not 0 <= keep_radius < 1:
            raise ValueError(f"Notch: need threshold > 1 and 0 <= keep_radius < 1, got {threshold}, {keep_radius}")
        self.threshold, self.keep_radius = float(threshold), float(keep_radius)

    def __call__(self, y: Tensor) -> Tensor:
        h, w = y.shape[-2:]
        spectrum = torch.fft.fft2(y)
        magnitude = spectrum.abs().reshape(-1, h * w)
        fy, fx = torch.fft.fftfreq(h, device=y.device) * h, torch.fft.fftfreq(w, device=y.device) * w  # bins
        radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        rings = radius.round().long().flatten()
        reference = torch.empty_like(magnitude)
        for ring in rings.unique():
            members = rings == ring
            reference[:, members] = magnitude[:, members].median(dim=1, keepdim=True).values
        nyquist = min(h, w) / 2
        peaks = (magnitude > self.threshold * reference) & (radius.flatten() > self.keep_radius * nyquist)
        peaks = F.max_pool2d(peaks.reshape(-1, 1, h, w).float(), 3, stride=1, padding=1) > 0
        return torch.fft.ifft2(spectrum * (~peaks).reshape(spectrum.shape)).real.to(y.dtype)


class Prefiltered:
    """``reconstruct(filter(y), physics)``; with ``reconstruct=None`` the filtered measurement
    itself, which needs an operator whose input and output shapes agree (denoising; ValueError
    otherwise)."""

    nfe = 0

    def __init__(self, filter: Callable[[Tensor], Tensor], reconstruct: Callable[..., Tensor] | None = None):
        self.filter, self.reconstruct = filter, reconstruct

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: Any, **kwargs: Any) -> Tensor:
        cleaned = self.filter(y)
        if self.reconstruct is not None:
            return self.reconstruct(cleaned, physics, **kwargs)
        if tuple(physics.in_shape) != tuple(physics.out_shape):
            raise ValueError(f"Prefiltered without reconstruct needs a physics whose input and output shapes "
                             f"agree; this one maps {physics.in_shape} -> {physics.out_shape} (give it a reconstruct)")
        return cleaned
