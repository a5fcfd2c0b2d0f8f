"""Exact analytic priors (Gaussian, Gaussian mixture) and their closed-form posteriors.

These stand in for a trained network wherever a :class:`~priors.prior.DiffusionPrior` is
used, so that samplers can be validated against exact answers. A prior is a distribution
of flattened model-space vectors ``z0 in R^d``, shown to samplers as images of
``shape = (C, *spatial)`` with ``prod(shape) == d`` (flattening is row-major, so for complex
data the first half of ``z0`` holds the real parts and the second half the imaginary ones).

Under the VP forward process ``z_t = sqrt(abar) z0 + sqrt(1 - abar) eps``, component ``k``
with mean ``m_k`` and covariance ``C_k = U diag(l) U^T`` gives
``z_t ~ N(sqrt(abar) m_k, abar C_k + (1 - abar) I)``, and the exact noise prediction is
``E[eps | z_t] = sum_k p(k | z_t) sqrt(1-abar) U diag(1 / (abar l + 1 - abar)) U^T
(z_t - sqrt(abar) m_k)``, so Tweedie's ``x0`` is exact at every noise level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from operators import LinearOperator, MatrixOperator

from .prior import DiffusionPrior, Normalization
from .schedule import VPSchedule

__all__ = ["GaussianMixture", "GaussianMixturePrior", "GaussianPrior", "mixture_posterior"]


@dataclass(frozen=True)
class GaussianMixture:
    """``sum_k w_k N(m_k, C_k)`` over ``R^d``; float64 tensors on one device.

    Attributes:
        weights: (K,) non-negative, summing to 1.
        means: (K, d).
        covs: (K, d, d) symmetric positive semi-definite.
    """

    weights: Tensor
    means: Tensor
    covs: Tensor

    @property
    def mean(self) -> Tensor:
        """(d,) mixture mean."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """(d, d) mixture covariance (law of total covariance)."""
        centred = self.means - self.mean
        between = torch.einsum("k,ki,kj->ij", self.weights, centred, centred)
        return torch.einsum("k,kij->ij", self.weights, self.covs) + between

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` independent draws, (n, d) float64."""
        device = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        vals, vecs = torch.linalg.eigh(self.covs)
        roots = vecs * vals.clamp_min(0).sqrt().unsqueeze(-2)  # (K, d, d), roots @ roots^T = C
        noise = torch.randn((n, self.means.shape[1]), generator=generator, dtype=torch.float64, device=device)
        return self.means[k] + torch.einsum("nij,nj->ni", roots[k], noise)


class MixtureEps(nn.Module):
    """Exact ``eps(z_t, t) = E[eps | z_t]`` of a Gaussian mixture under a VP schedule.

    Called like a noise-prediction network: ``(B, *shape)`` and training-step indices
    ``t`` (B,) -> ``(B, *shape)``; differentiable in ``z_t``; computed in float64.
    """

    def __init__(self, mixture: GaussianMixture, schedule: VPSchedule):
        super().__init__()
        vals, vecs = torch.linalg.eigh(mixture.covs.double())
        self.register_buffer("log_weights", mixture.weights.double().log())
        self.register_buffer("means", mixture.means.double())
        self.register_buffer("covs", mixture.covs.double())
        self.register_buffer("eigvals", vals.clamp_min(0))
        self.register_buffer("eigvecs", vecs)
        self.schedule = schedule

    def forward(self, z_t: Tensor, t: Tensor) -> Tensor:
        z = z_t.reshape(z_t.shape[0], -1).double()
        abar = self.schedule.alpha_bar(t, torch.float64).to(z.device).reshape(-1, 1, 1)
        r = z.unsqueeze(1) - abar.sqrt() * self.means  # (B, K, d)
        coords = torch.einsum("kde,bkd->bke", self.eigvecs, r)
        var = abar * self.eigvals + (1 - abar)  # (B, K, d) variances of z_t along U
        log_lik = -0.5 * (coords.square() / var + var.log()).sum(-1)
        resp = torch.softmax(self.log_weights + log_lik, dim=1)  # p(k | z_t), (B, K)
        eps_k = torch.einsum("kde,bke->bkd", self.eigvecs, coords / var) * (1 - abar).sqrt()
        return (resp.unsqueeze(-1) * eps_k).sum(1).reshape(z_t.shape).to(z_t.dtype)


class GaussianMixturePrior(DiffusionPrior):
    """A Gaussian-mixture prior on model-space vectors with the exact denoiser.

    Args:
        weights: (K,) mixture weights (normalised here).
        means: (K, d) component means in model space.
        covs: (K, d, d) component covariances in model space.
        schedule: VP schedule (default: linear, 1000 steps).
        shape: model-space image shape ``(C, *spatial)`` with ``prod == d``; default
            ``(1, d)``, or ``(2, d // 2)`` for complex data.
        normalization: physical <-> model space (default identity, real).
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor, schedule: VPSchedule | None = None,
                 shape: Sequence[int] | None = None, normalization: Normalization | None = None):
        normalization = normalization or Normalization()
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        d = means.shape[1]
        if shape is None:
            shape = (2, d // 2) if normalization.complex_channels else (1, d)
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != d or covs.shape != (len(weights), d, d) or means.shape[0] != len(weights):
            raise ValueError(f"inconsistent mixture: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                             f"covs {tuple(covs.shape)}, shape {shape}")
        mixture = GaussianMixture(weights / weights.sum(), means, 0.5 * (covs + covs.transpose(1, 2)))
        schedule = schedule or VPSchedule.linear()
        super().__init__(MixtureEps(mixture, schedule), schedule, normalization, channels=shape[0])
        self.shape = shape

    @property
    def mixture(self) -> GaussianMixture:
        """The prior over flattened model-space ``z0``."""
        net = self.network
        return GaussianMixture(net.log_weights.exp(), net.means, net.covs)

    def image(self, z: Tensor) -> Tensor:
        """Flattened model-space vectors (n, d) -> physical images ``(n, *physical shape)``."""
        return self.decode(z.reshape(-1, *self.shape).float())


class GaussianPrior(GaussianMixturePrior):
    """``N(mean, cov)`` on model-space vectors; ``mean`` (d,), ``cov`` (d, d). See the mixture."""

    def __init__(self, mean: Tensor, cov: Tensor, schedule: VPSchedule | None = None,
                 shape: Sequence[int] | None = None, normalization: Normalization | None = None):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        super().__init__(torch.ones(1), mean[None], cov[None], schedule, shape, normalization)


def _real(v: Tensor) -> Tensor:
    """Flatten (n, ...) to real (n, m) float64, stacking real and imaginary parts."""
    v = v.reshape(v.shape[0], -1)
    return torch.cat([v.real, v.imag], dim=1).double() if v.is_complex() else v.double()


def mixture_posterior(prior: GaussianMixturePrior, operator: LinearOperator | Tensor, y: Tensor,
                      noise_sigma: float) -> GaussianMixture:
    """Exact posterior of ``z0`` given ``y = A decode(z0) + n``, over flattened model space.

    ``operator`` is a LinearOperator on physical images or a dense ``(m, n)`` matrix on
    flattened ones; ``y`` is one measurement, ``(1, *out_shape)`` or ``(*out_shape)``.
    Noise: every real component of ``y`` (real and imaginary parts for complex data) is
    ``N(0, noise_sigma^2)``, as :class:`operators.GaussianNoise` draws it. Each component's
    weight is multiplied by the marginal likelihood ``N(y; G m_k + c, G C_k G^T + s^2 I)``
    of the affine map ``z0 -> (G z0 + c)``; means and covariances are the Kalman updates.
    Returns a (float64) :class:`GaussianMixture`; for a Gaussian prior it has one component.
    """
    mix = prior.mixture
    d = mix.means.shape[1]
    device = mix.means.device
    basis = torch.cat([torch.zeros(1, d), torch.eye(d)]).to(device)
    images = prior.image(basis)
    if not isinstance(operator, LinearOperator):
        operator = MatrixOperator(torch.as_tensor(operator).to(device), in_shape=images.shape[1:])
    with torch.no_grad():
        mapped = _real(operator(images))
    offset, gain = mapped[0], (mapped[1:] - mapped[0]).T  # (m,), (m, d)
    y = _real(y.reshape(1, -1))[0] - offset
    noise_cov = noise_sigma**2 * torch.eye(len(y), dtype=torch.float64, device=device)

    cov_y = gain @ mix.covs @ gain.T + noise_cov  # (K, m, m)
    chol = torch.linalg.cholesky(cov_y)
    resid = y - mix.means @ gain.T  # (K, m)
    white = torch.linalg.solve_triangular(chol, resid.unsqueeze(-1), upper=False).squeeze(-1)
    log_marginal = -0.5 * white.square().sum(-1) - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    weights = torch.softmax(mix.weights.log() + log_marginal, dim=0)

    cross = mix.covs @ gain.T  # (K, d, m) = C_k G^T
    kalman = torch.cholesky_solve(cross.transpose(1, 2), chol).transpose(1, 2)  # C_k G^T S_k^-1
    means = mix.means + (kalman @ resid.unsqueeze(-1)).squeeze(-1)
    covs = mix.covs - kalman @ cross.transpose(1, 2)
    return GaussianMixture(weights, means, 0.5 * (covs + covs.transpose(1, 2)))
