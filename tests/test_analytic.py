"""Analytic priors: exact Tweedie denoisers and closed-form posteriors, checked by brute force."""

import math

import pytest
import torch

from operators import MatrixOperator
from priors import GaussianMixturePrior, GaussianPrior, Normalization, VPSchedule, mixture_posterior

WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MEANS = torch.tensor([[-1.0, 0.5], [1.2, -0.4]], dtype=torch.float64)
COVS = torch.tensor([[[0.30, 0.10], [0.10, 0.20]], [[0.15, -0.05], [-0.05, 0.40]]], dtype=torch.float64)


def grid(half_width: float = 4.0, n: int = 401) -> tuple[torch.Tensor, float]:
    """(n*n, 2) points of a square grid and the area of one cell."""
    u = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    pts = torch.cartesian_prod(u, u)
    return pts, float(u[1] - u[0]) ** 2


def mixture_density(pts: torch.Tensor) -> torch.Tensor:
    """Prior density of the 2D test mixture at (n, 2) points, written independently."""
    dens = torch.zeros(len(pts), dtype=torch.float64)
    for w, m, c in zip(WEIGHTS, MEANS, COVS):
        dens += w * torch.distributions.MultivariateNormal(m, c).log_prob(pts).exp()
    return dens


def test_mixture_tweedie_matches_numerical_integration():
    prior = GaussianMixturePrior(WEIGHTS, MEANS, COVS, VPSchedule.linear())
    pts, _ = grid()
    p0 = mixture_density(pts)
    z_t = torch.tensor([[0.3, -0.2], [1.5, 0.7], [-2.0, 1.0]], dtype=torch.float64)
    for t in (0, 50, 200, 500, 900):
        a = prior.schedule.alpha_bar(t, torch.float64)
        lik = torch.exp(-((z_t[:, None, :] - a.sqrt() * pts) ** 2).sum(-1) / (2 * (1 - a)))  # (3, n)
        post = lik * p0
        expected = (post @ pts) / post.sum(1, keepdim=True)
        got = prior.x0(z_t.float().reshape(3, 1, 2), t).reshape(3, 2).double()
        atol = 2e-4 if t == 0 else 1e-5  # at t = 0 the likelihood is narrower than the grid cells
        torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_gaussian_tweedie_closed_form_and_score():
    torch.manual_seed(0)
    d = 6
    root = torch.randn(d, d, dtype=torch.float64)
    cov, mean = root @ root.T / d + 0.1 * torch.eye(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    prior = GaussianPrior(mean, cov, shape=(1, 2, 3))
    z = torch.randn(4, 1, 2, 3)
    t = torch.tensor([3, 100, 400, 999])
    a = prior.schedule.alpha_bar(t, torch.float64).reshape(-1, 1, 1)
    gain = a.sqrt() * cov @ torch.linalg.inv(a * cov + (1 - a) * torch.eye(d, dtype=torch.float64))
    flat = z.reshape(4, d).double()
    expected = mean + (gain @ (flat - a.sqrt().squeeze(-1) * mean).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(prior.x0(z, t).reshape(4, d).double(), expected, atol=1e-5, rtol=1e-5)
    # the score is the gradient of log N(z; sqrt(a) m, a C + (1 - a) I)
    zg = z.double().requires_grad_(True)
    cov_t = a * cov + (1 - a) * torch.eye(d, dtype=torch.float64)
    logp = torch.distributions.MultivariateNormal(a.sqrt().squeeze(-1) * mean, cov_t).log_prob(zg.reshape(4, d))
    (grad,) = torch.autograd.grad(logp.sum(), zg)
    torch.testing.assert_close(prior.score(z, t).double(), grad, atol=1e-4, rtol=1e-4)


def test_mixture_posterior_matches_grid():
    prior = GaussianMixturePrior(WEIGHTS, MEANS, COVS)
    matrix = torch.tensor([[1.0, 0.6]], dtype=torch.float64)
    y, sigma = torch.tensor([[0.4]], dtype=torch.float64), 0.3
    post = mixture_posterior(prior, matrix, y, sigma)

    pts, _ = grid()
    dens = mixture_density(pts) * torch.exp(-((pts @ matrix.T - y) ** 2).sum(-1) / (2 * sigma**2))
    dens = dens / dens.sum()
    mean = dens @ pts
    cov = (dens[:, None] * (pts - mean)).T @ (pts - mean)
    torch.testing.assert_close(post.mean, mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(post.covariance, cov, atol=1e-6, rtol=0)
    assert post.weights[0] != pytest.approx(WEIGHTS[0].item(), abs=0.05)  # the data moved the weights


def test_posterior_with_complex_operator_and_normalization():
    """Complex physics, complex-channel normalisation: posterior equals the real-stacked Gaussian one."""
    torch.manual_seed(1)
    n, m = 3, 2  # complex pixels, complex measurements
    d = 2 * n
    root = torch.randn(d, d, dtype=torch.float64)
    cov, mean = root @ root.T / d + 0.2 * torch.eye(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    scale = 2.0
    prior = GaussianPrior(mean, cov, normalization=Normalization(scale=scale, complex_channels=True))
    a = torch.randn(m, n, dtype=torch.complex128)
    physics = MatrixOperator(a, in_shape=(1, n))
    y = torch.randn(1, m, dtype=torch.complex128)
    post = mixture_posterior(prior, physics, y, 0.5)
    # real form: [Re y; Im y] = scale [[Ar, -Ai], [Ai, Ar]] z + noise
    g = scale * torch.cat([torch.cat([a.real, -a.imag], 1), torch.cat([a.imag, a.real], 1)], 0)
    yr = torch.cat([y.real, y.imag], 1)[0]
    s = g @ cov @ g.T + 0.25 * torch.eye(2 * m, dtype=torch.float64)
    k = cov @ g.T @ torch.linalg.inv(s)
    torch.testing.assert_close(post.mean, mean + k @ (yr - g @ mean), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(post.covariance, cov - k @ g @ cov, atol=1e-5, rtol=1e-5)
    x = prior.image(post.mean[None])
    assert x.shape == (1, 1, n) and x.is_complex()
    expected = scale * torch.complex(post.mean[:n], post.mean[n:])
    torch.testing.assert_close(x[0, 0].cdouble(), expected, atol=1e-5, rtol=0)


def test_mixture_samples_match_mean_and_covariance():
    prior = GaussianMixturePrior(WEIGHTS, MEANS, COVS)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    samples = prior.mixture.sample(n, g)
    tol = 5 / math.sqrt(n)
    torch.testing.assert_close(samples.mean(0), prior.mixture.mean, atol=tol * 2, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), prior.mixture.covariance, atol=tol * 3, rtol=0)
    assert torch.equal(prior.mixture.sample(n, torch.Generator().manual_seed(0)), samples)
