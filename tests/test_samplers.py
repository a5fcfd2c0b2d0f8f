"""DPS and DDS against exact Gaussian posteriors; determinism, batch independence, complex data.

The score is the relative error of a sampler's mean over a batch of posterior draws,
``||mean - mu_post|| / ||mu_prior - mu_post||``: 1 for a sampler that ignores the data.
Measured on the real problem below (d = 16, m = 8, sigma = 0.1, 400 draws): DDS 50 steps
0.08 (noisy form gamma = 30: 0.09, gamma = 1: 0.24), DPS zeta 0.3 200 steps 0.10 (1000
steps 0.19); complex: DDS 0.05, DPS 0.07; data ignored ~1.0. Exact posterior draws score
0.02 on average (Monte-Carlo noise), at most 0.04.
"""

import math

import pytest
import torch

from operators import MatrixOperator
from priors import DiffusionPrior, GaussianPrior, Normalization, VPSchedule, mixture_posterior
from priors.unet import from_guided_diffusion
from recon.samplers import DAPS, DDS, DPS, DiffPIR, PiGDM, PnPDM, REDDiff

DRAWS = 400
GOOD, BAD = 0.2, 0.8  # pass below GOOD; a sampler ignoring the data must score above BAD


pytestmark = pytest.mark.usefixtures("one_thread")


def problem(complex_data: bool = False, d: int = 16, m: int = 8, sigma: float = 0.1, seed: int = 0):
    """A Gaussian prior, a random operator, one noisy measurement and its exact posterior."""
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = root @ root.T / d + 0.05 * torch.eye(d, dtype=torch.float64)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    if complex_data:
        norm = Normalization(scale=2.0, complex_channels=True)
        prior = GaussianPrior(mean, cov, normalization=norm)
        n = d // 2
        matrix = torch.randn(m, n, generator=g, dtype=torch.complex128) / math.sqrt(n)
        noise = torch.randn(m, generator=g, dtype=torch.complex128) * sigma  # sigma per real part
    else:
        prior = GaussianPrior(mean, cov)
        n = d
        matrix = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(n)
        noise = torch.randn(m, generator=g, dtype=torch.float64) * sigma
    physics = MatrixOperator(matrix.to(torch.complex64 if complex_data else torch.float32), in_shape=(1, n))
    truth = prior.image(prior.mixture.sample(1, g))
    y = physics(truth) + noise.to(physics.matrix.dtype)
    return prior, physics, y, mixture_posterior(prior, physics, y, sigma)


def score(prior, x, post) -> float:
    """Relative error of the batch mean of ``x`` (physical) against the posterior mean."""
    z = prior.encode(x).reshape(x.shape[0], -1).double()
    mu, mu0 = post.mean, prior.mixture.mean
    return float((z.mean(0) - mu).norm() / (mu0 - mu).norm())


def draws(sampler, prior, physics, y, seed: int = 1) -> torch.Tensor:
    x = sampler(y.expand(DRAWS, *y.shape[1:]), physics, generator=torch.Generator().manual_seed(seed))
    assert x.shape == (DRAWS, *physics.in_shape)
    return x


@pytest.mark.parametrize("settings", [{}, {"gamma": 30.0}, {"late_sigma": 0.1, "late_gamma": 3.0}],
                         ids=["noiseless", "noisy", "noisy_late_steps"])
def test_dds_approaches_posterior_mean(settings):
    prior, physics, y, post = problem()
    assert score(prior, draws(DDS(prior, **settings), prior, physics, y), post) < GOOD
    assert score(prior, draws(DDS(prior, gamma=0.0), prior, physics, y), post) > BAD


def test_dps_approaches_posterior_mean():
    prior, physics, y, post = problem()
    assert score(prior, draws(DPS(prior, steps=200), prior, physics, y), post) < GOOD
    assert score(prior, draws(DPS(prior, steps=200, zeta=0.0), prior, physics, y), post) > BAD


def test_complex_data_approaches_posterior_mean():
    prior, physics, y, post = problem(complex_data=True)
    for sampler in (DDS(prior), DPS(prior, steps=200)):
        x = draws(sampler, prior, physics, y)
        assert x.is_complex()
        assert score(prior, x, post) < GOOD


@pytest.mark.parametrize("make", [lambda p: DDS(p, steps=10, gamma=5.0), lambda p: DPS(p, steps=10),
                                  lambda p: REDDiff(p, steps=10), lambda p: DiffPIR(p, steps=8, zeta=1.0, sigma=0.1),
                                  lambda p: PiGDM(p, steps=8, sigma=0.1), lambda p: DAPS(p, steps=8, sigma=0.1),
                                  lambda p: PnPDM(p, iterations=8, sigma=0.1)],
                         ids=["DDS", "DPS", "REDDiff", "DiffPIR", "PiGDM", "DAPS", "PnPDM"])
def test_seeded_runs_are_identical_and_batch_elements_independent(make):
    prior, physics, y, _ = problem()
    sampler = make(prior)
    ys = y.expand(3, -1).clone()
    run = lambda ys, seed: sampler(ys, physics, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    first = run(ys, 0)
    assert torch.equal(first, run(ys, 0))
    assert not torch.allclose(first, run(ys, 1))
    ys[0] += 1.0
    changed = run(ys, 0)
    assert not torch.allclose(changed[0], first[0])
    assert torch.equal(changed[1:], first[1:])


@pytest.mark.parametrize("cls", [DDS, DPS, REDDiff])
def test_nfe_and_callback(cls):
    prior, physics, y, _ = problem()
    calls = []
    sampler = cls(prior, steps=7)
    sampler(y, physics, callback=lambda i, n: calls.append((i, n)), generator=torch.Generator().manual_seed(0))
    assert sampler.nfe == 7 and calls == [(i, 7) for i in range(7)]


@pytest.mark.parametrize("cls, settings, error", [(DPS, {"operator_norm": 1.0}, "image shape"),
                                                  (REDDiff, {}, "x_init")], ids=["DPS", "REDDiff"])
def test_a_plain_differentiable_callable_takes_the_shape_from_x_init(cls, settings, error):
    """With ``x_init`` (and DPS's ``operator_norm``) a plain callable gives the operator's result."""
    prior, physics, y, _ = problem()
    x = DDS(prior, steps=5)(y, physics, generator=torch.Generator().manual_seed(0))
    sampler = cls(prior, steps=5, **settings)
    run = lambda forward: sampler(y, forward, x_init=x, generator=torch.Generator().manual_seed(1))  # noqa: E731
    assert torch.equal(run(lambda v: physics(v)), run(physics))
    with pytest.raises(ValueError, match=error):
        sampler(y, lambda v: physics(v))


def unet_problem(complex_data: bool):
    """A tiny untrained UNet prior with learned-variance channels, a random operator, a measurement."""
    torch.manual_seed(0)
    net = from_guided_diffusion({"image_size": 32, "in_channels": 2 if complex_data else 1, "num_channels": 32,
                                 "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "",
                                 "learn_sigma": True})
    norm = Normalization(scale=0.5, complex_channels=True) if complex_data else Normalization(0.25, 0.25)
    prior = DiffusionPrior(net, VPSchedule.linear(), norm, channels=2 if complex_data else 1)
    dtype = torch.complex64 if complex_data else torch.float32
    physics = MatrixOperator(torch.randn(64, 1024, dtype=dtype) / 32, in_shape=(1, 32, 32))
    return prior, physics, torch.randn(2, 64, dtype=dtype)


def tweedie_chain(prior, batch: int, sigma, seed: int) -> torch.Tensor:
    """Two steps of Tweedie estimates and DDIM-form re-noising, written out with the network itself:
    ``z_prev = sqrt(abar') z0 + sqrt(1 - abar' - s^2) eps + s noise``, ``s = sigma(abar, abar')``;
    the last ``z0`` decoded by hand (the normalisation of :func:`unet_problem`)."""
    g = torch.Generator().manual_seed(seed)
    c = prior.channels
    z = torch.randn(batch, c, 32, 32, generator=g)
    for t, t_prev in [(999, 0), (0, -1)]:
        abar, abar_prev = (float(prior.schedule.alpha_bar(s, torch.float64)) for s in (t, t_prev))
        eps = prior.network(z, torch.full((batch,), float(t)))[:, :c]  # learned-variance channels dropped
        z0 = (z - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        if t_prev >= 0:
            s = sigma(abar, abar_prev)
            noise = torch.randn(z.shape, generator=g)
            z = math.sqrt(abar_prev) * z0 + math.sqrt(1 - abar_prev - s**2) * eps + s * noise
    return torch.complex(z0[:, :1], z0[:, 1:]) * 0.5 if c == 2 else z0 * 0.25 + 0.25


@pytest.mark.parametrize("complex_data", [False, True], ids=["real", "complex"])
def test_samplers_with_a_unet_prior_follow_the_formulas(complex_data):
    """Image-shaped path (learned-variance channels, complex channels, the normalisation): without
    data (gamma = 0, zeta = 0) DDS and DPS are the written-out Tweedie chains with DDS's eta mix and
    the DDPM posterior std; the noiseless DDS step interpolates the data. Measured (outputs up to 160
    real, 350 complex: the network is untrained): the chains agree to 8e-6 (DDS, real) and exactly
    otherwise, while eta = 0.5 instead of 0.85 moves DDS's by 4e-3; 64 CG steps leave a relative
    residual of 2e-5 (real) and 4e-5 (complex), 3 CG steps 0.014 and 0.025."""
    prior, physics, y = unet_problem(complex_data)
    dtype = torch.complex64 if complex_data else torch.float32
    run = lambda sampler: sampler(y, physics, generator=torch.Generator().manual_seed(0))  # noqa: E731
    dds = run(DDS(prior, steps=2, gamma=0.0))
    assert dds.shape == (2, 1, 32, 32) and dds.dtype == dtype
    torch.testing.assert_close(dds, tweedie_chain(prior, 2, lambda a, ap: 0.85 * math.sqrt(1 - ap), 0),
                               rtol=0, atol=5e-5)
    dps = run(DPS(prior, steps=2, zeta=0.0))
    ddpm = lambda a, ap: math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))  # noqa: E731
    torch.testing.assert_close(dps, tweedie_chain(prior, 2, ddpm, 0), rtol=0, atol=5e-5)
    fitted = run(DDS(prior, steps=2, cg_iterations=64))
    assert float((physics(fitted) - y).norm() / y.norm()) < 1e-3


def test_dds_late_steps_switch_to_the_noisy_form():
    prior, physics, y, _ = problem()
    run = lambda sampler: sampler(y, physics, generator=torch.Generator().manual_seed(0))  # noqa: E731
    assert torch.equal(run(DDS(prior, steps=20, late_sigma=math.inf, late_gamma=3.0)), run(DDS(prior, steps=20, gamma=3.0)))
    assert torch.equal(run(DDS(prior, steps=20, late_sigma=0.0, late_gamma=3.0)), run(DDS(prior, steps=20)))
    assert not torch.equal(run(DDS(prior, steps=20, late_sigma=0.1, late_gamma=3.0)), run(DDS(prior, steps=20)))


def test_dds_clamp_projects_onto_the_prior_range():
    prior, physics, y, _ = problem()
    free = DDS(prior, steps=20)(y, physics, generator=torch.Generator().manual_seed(0))
    assert free.abs().max() > 0.5  # the unclamped Gaussian posterior leaves the box
    x = DDS(prior, steps=20, clamp=(-0.5, 0.5))(y, physics, generator=torch.Generator().manual_seed(0))
    assert x.min() >= -0.5 - 1e-6 and x.max() <= 0.5 + 1e-6


def support_problem():
    """``(prior, physics, y)``: a complex 4 x 4 Gaussian prior around 1 and two coils whose maps
    are 0 in column 0, where no coil sees the image (as ESPIRiT maps cropped to the object)."""
    from operators import MultiCoilMRI

    norm = Normalization(scale=1.0, complex_channels=True)
    prior = GaussianPrior(torch.ones(32), torch.eye(32, dtype=torch.float64), shape=(2, 4, 4), normalization=norm)
    maps = torch.ones(2, 4, 4, dtype=torch.complex64) / math.sqrt(2)
    maps[:, :, 0] = 0
    physics = MultiCoilMRI(maps, torch.ones(4))
    return prior, physics, physics(torch.ones(1, 1, 4, 4, dtype=torch.complex64))


def test_dds_restricts_the_image_to_the_coil_support():
    """Where no coil sees the image the data say nothing: DDS must not leave the prior's anatomy there."""
    prior, physics, y = support_problem()
    x = DDS(prior, steps=10)(y, physics, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[..., 0], torch.zeros_like(x[..., 0]))
    assert float(x[..., 1:].abs().min()) > 0.5


def test_mixed_precision_autocast_is_close_to_fp32_and_validated():
    from priors import load_prior

    prior = load_prior("ct-phantom-128")
    z = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = prior.eps(z, 300)
    prior.precision = "bf16"
    mixed = prior.eps(z, 300)
    assert mixed.dtype == torch.float32 and not torch.equal(mixed, reference)
    assert float((mixed - reference).norm() / reference.norm()) < 0.05
    with pytest.raises(ValueError, match="precision='fp64'"):
        prior.precision = "fp64"


def test_compile_option_traces_the_network_and_keeps_its_output():
    """``compile=aot_eager`` runs the prior network through TorchDynamo (graph capture, no C
    compiler needed); its ``eps`` must equal the eager one."""
    from omegaconf import OmegaConf

    from recon.build import build_prior

    node = OmegaConf.create({"name": "ct-phantom-128", "checkpoint": None})
    eager = build_prior(node, torch.device("cpu"))
    compiled = build_prior(node, torch.device("cpu"), compile="aot_eager")
    z = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert compiled.network._compiled_call_impl is not None and eager.network._compiled_call_impl is None
    torch.testing.assert_close(compiled.eps(z, 300), eager.eps(z, 300), rtol=1e-4, atol=1e-5)
