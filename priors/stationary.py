"""Stationary Gaussian priors: a power spectrum and its exact (Wiener) denoiser.

A stationary Gaussian field on an ``H x W`` grid with circular boundaries has a covariance
that the unitary 2D DFT ``F`` diagonalises: ``C = F^H diag(P) F`` with ``P`` (H, W) the power
spectrum (variance per unitary Fourier coefficient; ``P(k) = P(-k)`` for real fields). Under
the VP forward process ``z_t = sqrt(abar) z0 + sqrt(1 - abar) eps`` the exact noise prediction
is the Wiener filter

    E[eps | z_t] = sqrt(1 - abar) F^H [ F(z_t - sqrt(abar) m) / (abar P + 1 - abar) ],

so Tweedie's estimate is exact at every noise level and costs two FFTs: no network, any size.
This is the analytic structured-noise model (detector stripes, interference): fit ``P`` to
samples of the noise with :meth:`StationaryGaussianPrior.fit`, or give it directly.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .prior import DiffusionPrior, Normalization
from .schedule import VPSchedule

__all__ = ["StationaryGaussianPrior"]


def _filter(v: Tensor, gain: Tensor) -> Tensor:
    """``F^H diag(gain) F v`` over the last two axes (real ``v``, real symmetric ``gain``)."""
    return torch.fft.ifft2(torch.fft.fft2(v, norm="ortho") * gain, norm="ortho").real


class WienerEps(nn.Module):
    """Exact ``E[eps | z_t]`` of ``N(0, F^H diag(P) F)`` in model space.

    Called like a noise-prediction network on ``(B, 1, H, W)`` with training-step indices
    ``t`` (B,); computed in float64, differentiable in ``z_t``.
    """

    def __init__(self, power: Tensor, schedule: VPSchedule):
        super().__init__()
        self.register_buffer("power", power.double())
        # abar by training step, on the module's device: indexing it needs no host round trip
        self.register_buffer("alpha_bar", schedule.train_alphas_cumprod.double())

    def forward(self, z_t: Tensor, t: Tensor) -> Tensor:
        abar = self.alpha_bar[t.long()].reshape(-1, 1, 1, 1)
        return ((1 - abar).sqrt() * _filter(z_t.double(), 1.0 / (abar * self.power + 1 - abar))).to(z_t.dtype)


class StationaryGaussianPrior(DiffusionPrior):
    """``N(mean, F^H diag(P) F)`` on ``(1, H, W)`` real images, with the exact Wiener denoiser.

    Args:
        power_spectrum: (H, W) ``P`` in physical units squared per unitary DFT coefficient
            (for white noise of std ``s``: ``P = s^2`` everywhere). Must be non-negative and
            symmetric, ``P(k) = P(-k)``, as the spectrum of a real field is.
        mean: the field's constant mean (physical units).
        scale: physical units per model unit (default: the field's std, ``sqrt(mean(P))``,
            so that model-space draws have unit variance per pixel).
        schedule: VP schedule (default linear, 1000 steps; a joint sampler needs it to match
            the signal prior's).
    """

    def __init__(self, power_spectrum: Tensor, mean: float = 0.0, scale: float | None = None,
                 schedule: VPSchedule | None = None, units: str = ""):
        power = torch.as_tensor(power_spectrum, dtype=torch.float64)
        if power.dim() != 2 or bool((power < 0).any()):
            raise ValueError(f"power_spectrum must be a non-negative (H, W) array, got shape {tuple(power.shape)}")
        mirrored = torch.roll(power.flip(0, 1), shifts=(1, 1), dims=(0, 1))  # P(-k)
        if not torch.allclose(power, mirrored, rtol=1e-6, atol=1e-12 * float(power.max())):
            raise ValueError("power_spectrum must satisfy P(k) = P(-k) (the spectrum of a real field)")
        scale = float(scale) if scale is not None else float(power.mean().sqrt()) or 1.0
        schedule = schedule or VPSchedule.linear()
        normalization = Normalization(offset=mean, scale=scale, units=units)
        super().__init__(WienerEps(power / scale**2, schedule), schedule, normalization, channels=1)
        self.shape = (1, *power.shape)

    @classmethod
    def fit(cls, samples: Tensor, schedule: VPSchedule | None = None, units: str = "") -> "StationaryGaussianPrior":
        """The stationary Gaussian closest to ``samples`` (N, H, W) or (N, 1, H, W), physical units:
        their mean, and their averaged periodogram as ``P`` (symmetric by construction)."""
        samples = torch.as_tensor(samples, dtype=torch.float64)
        samples = samples.reshape(samples.shape[0], *samples.shape[-2:])
        if samples.shape[0] < 2:
            raise ValueError(f"need at least 2 noise samples to fit a spectrum, got {samples.shape[0]}")
        mean = float(samples.mean())
        power = torch.fft.fft2(samples - mean, norm="ortho").abs().square().mean(0)
        return cls(power, mean=mean, schedule=schedule, units=units)

    @classmethod
    def from_pattern(cls, pattern: Callable[..., Tensor], shape: Sequence[int], count: int = 512,
                     seed: int = 1000003, schedule: VPSchedule | None = None) -> "StationaryGaussianPrior":
        """:meth:`fit` to ``count`` draws ``pattern((count, 1, *shape), generator=g)`` of a noise model
        (e.g. :class:`operators.DetectorStripes`) from a generator seeded with ``seed`` (keep it
        apart from the seeds that draw evaluation cases)."""
        shape = tuple(int(s) for s in shape)
        samples = pattern((int(count), 1, *shape), generator=torch.Generator().manual_seed(int(seed)))
        return cls.fit(samples, schedule=schedule)

    @classmethod
    def white(cls, shape: tuple[int, int], sigma: float, schedule: VPSchedule | None = None) -> "StationaryGaussianPrior":
        """White Gaussian noise of std ``sigma`` on an ``shape = (H, W)`` grid."""
        return cls(torch.full(shape, float(sigma) ** 2, dtype=torch.float64), schedule=schedule)

    @property
    def power_spectrum(self) -> Tensor:
        """(H, W) ``P`` in physical units squared."""
        return self.network.power * self.normalization.scale**2

    def covariance(self) -> Tensor:
        """Dense (d, d) covariance in physical units, ``d = H W`` (row-major); small grids only."""
        h, w = self.shape[1:]
        basis = torch.eye(h * w, dtype=torch.float64, device=self.power_spectrum.device).reshape(h * w, h, w)
        return _filter(basis, self.power_spectrum).reshape(h * w, h * w)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` independent draws ``(n, 1, H, W)`` float64 in physical units."""
        power = self.power_spectrum
        white = torch.randn((n, *self.shape), generator=generator, dtype=torch.float64, device=power.device)
        return self.normalization.offset + _filter(white, power.sqrt())
