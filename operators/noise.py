"""Measurement noise models, with levels in the measurement's physical units.

Each model is called as ``noise(y_clean, generator=g) -> y_noisy`` and is reproducible for
a given ``torch.Generator``.
"""

from __future__ import annotations

import math

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
