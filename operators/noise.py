"""Measurement noise models, with levels in the measurement's physical units.

Each model is called as ``noise(y_clean, generator=g) -> y_noisy`` and is reproducible for
a given ``torch.Generator``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


class GaussianNoise:
    """Additive white Gaussian noise ``y + sigma * n``.

    ``sigma`` is in the units of ``y`` (line integrals for CT, k-space units for MRI).
    For complex ``y`` the real and imaginary parts each get independent ``N(0, sigma^2)``.
    """

    def __init__(self, sigma: float):
        if sigma < 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.sigma == 0:
            return y.clone()
        real_dtype = y.real.dtype if y.is_complex() else y.dtype
        n = torch.randn(y.shape, generator=generator, dtype=real_dtype, device=y.device)
        if y.is_complex():
            imag = torch.randn(y.shape, generator=generator, dtype=real_dtype, device=y.device)
            n = torch.complex(n, imag)
        return y + self.sigma * n

    def variance(self, y: Tensor) -> Tensor:
        """Per-measurement variance, shape of ``y`` (constant ``sigma^2``)."""
        return torch.full_like(y.real if y.is_complex() else y, self.sigma**2)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"


class TransmissionNoise:
    """Poisson photon-counting noise of X-ray transmission, returned as line integrals.

    ``y`` holds line integrals ``p = int mu dl`` (dimensionless). Detected counts are
    ``N ~ Poisson(photons * exp(-p))`` plus optional electronic noise of std
    ``electronic_sigma`` counts; the result is ``-log(max(N, floor) / photons)``.
    ``photons`` is the unattenuated incident count per detector bin (e.g. 1e4 low dose,
    1e5 standard dose).
    """

    def __init__(self, photons: float, electronic_sigma: float = 0.0, floor: float = 1.0):
        if photons <= 0:
            raise ValueError(f"photons must be > 0, got {photons}")
        self.photons = float(photons)
        self.electronic_sigma = float(electronic_sigma)
        self.floor = float(floor)

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        expected = self.photons * torch.exp(-y.double())
        counts = torch.poisson(expected, generator=generator)
        if self.electronic_sigma > 0:
            counts = counts + self.electronic_sigma * torch.randn(
                counts.shape, generator=generator, dtype=counts.dtype, device=counts.device
            )
        counts = counts.clamp_min(self.floor)
        return (math.log(self.photons) - torch.log(counts)).to(y.dtype)

    def variance(self, y: Tensor) -> Tensor:
        """Approximate post-log variance ``1 / (photons * exp(-y))`` per measurement."""
        return torch.exp(y) / self.photons

    def __repr__(self) -> str:
        return f"TransmissionNoise(photons={self.photons:g}, electronic_sigma={self.electronic_sigma})"


class DetectorStripes:
    """Per-detector gain errors of a CT detector: stripes along the angle axis of a sinogram.

    A detector bin whose gain is off by a factor ``g`` adds ``-log g`` to every line integral
    it measures: a constant offset along the views, a ring in the reconstructed image. Draws
    ``(..., views, detectors)`` offsets (line-integral units):

    * every bin: ``N(0, gain_sigma^2)`` (calibration residue);
    * a ``bad_fraction`` of bins: an extra ``N(0, bad_sigma^2)`` (miscalibrated or failing bins);
    * every bin: a linear drift over the scan, end-to-end change ``N(0, drift_sigma^2)``
      (gains wander while the gantry turns).
    """

    def __init__(self, gain_sigma: float = 0.02, bad_fraction: float = 0.05, bad_sigma: float = 0.15,
                 drift_sigma: float = 0.005):
        if min(gain_sigma, bad_sigma, drift_sigma) < 0 or not 0 <= bad_fraction <= 1:
            raise ValueError("DetectorStripes: sigmas must be >= 0 and bad_fraction in [0, 1]")
        self.gain_sigma, self.bad_fraction = float(gain_sigma), float(bad_fraction)
        self.bad_sigma, self.drift_sigma = float(bad_sigma), float(drift_sigma)

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> Tensor:
        *batch, views, detectors = shape
        per_bin = (*batch, 1, detectors)

        def normal(sigma: float) -> Tensor:
            return sigma * torch.randn(per_bin, generator=generator, device=device)

        bad = torch.rand(per_bin, generator=generator, device=device) < self.bad_fraction
        offset = normal(self.gain_sigma) + bad * normal(self.bad_sigma)
        ramp = torch.linspace(-0.5, 0.5, views, device=device).reshape(views, 1)
        return offset + normal(self.drift_sigma) * ramp

    def __repr__(self) -> str:
        return (f"DetectorStripes(gain_sigma={self.gain_sigma}, bad_fraction={self.bad_fraction}, "
                f"bad_sigma={self.bad_sigma}, drift_sigma={self.drift_sigma})")


class Interference:
    """Periodic interference (mains hum, moire, coherent pick-up): a sum of plane waves.

    Draws ``(..., H, W)`` patterns ``sum_k a_k cos(2 pi (u cos phi_k + v sin phi_k) / L_k + psi_k)``
    with ``waves`` components per image: amplitude ``a_k ~ U(amplitude / 2, amplitude)``
    (units of the data), wavelength ``L_k ~ U(*wavelengths)`` pixels, orientation
    ``phi_k ~ U(0, pi)``, phase ``psi_k ~ U(0, 2 pi)``.
    """

    def __init__(self, amplitude: float = 0.03, waves: int = 2, wavelengths: tuple[float, float] = (3.0, 12.0)):
        if amplitude < 0 or waves < 1 or not 2.0 <= wavelengths[0] <= wavelengths[1]:
            raise ValueError(f"Interference: need amplitude >= 0, waves >= 1 and 2 <= wavelengths[0] <= "
                             f"wavelengths[1], got {amplitude}, {waves}, {tuple(wavelengths)}")
        self.amplitude, self.waves = float(amplitude), int(waves)
        self.wavelengths = (float(wavelengths[0]), float(wavelengths[1]))

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> Tensor:
        *batch, h, w = shape
        per_wave = (*batch, self.waves, 1, 1)

        def uniform(low: float, high: float) -> Tensor:
            return low + (high - low) * torch.rand(per_wave, generator=generator, device=device)

        amp = uniform(self.amplitude / 2, self.amplitude)
        length, angle, phase = uniform(*self.wavelengths), uniform(0, math.pi), uniform(0, 2 * math.pi)
        v, u = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                              torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
        waves = amp * torch.cos(2 * math.pi * (u * angle.cos() + v * angle.sin()) / length + phase)
        return waves.sum(dim=-3)

    def __repr__(self) -> str:
        return f"Interference(amplitude={self.amplitude}, waves={self.waves}, wavelengths={self.wavelengths})"


class StructuredNoise:
    """``y + n + sigma w``: a structured ``pattern`` n plus white Gaussian noise w.

    ``pattern(shape, generator, device) -> n`` (e.g. :class:`DetectorStripes`,
    :class:`Interference`) is drawn first, then the white noise, both from ``generator``, so
    :meth:`pattern_of` replays the exact n of a call from a copy of the generator's state.
    """

    def __init__(self, pattern: Callable[..., Tensor], sigma: float = 0.0):
        if sigma < 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma}")
        self.pattern = pattern
        self.white = GaussianNoise(sigma)

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if y.is_complex():
            raise ValueError("StructuredNoise draws real patterns; the measurement is complex")
        n = self.pattern(tuple(y.shape), generator=generator, device=y.device).to(y.dtype)
        return self.white(y + n, generator=generator)

    def pattern_of(self, y: Tensor, generator_state: Tensor) -> Tensor:
        """The structured part a call on ``y`` drew from a generator in ``generator_state``."""
        generator = torch.Generator(device=y.device)
        generator.set_state(generator_state)
        return self.pattern(tuple(y.shape), generator=generator, device=y.device).to(y.dtype)

    def __repr__(self) -> str:
        return f"StructuredNoise({self.pattern!r}, sigma={self.white.sigma})"
