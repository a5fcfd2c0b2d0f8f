"""RED-Diff against exact Gaussian posteriors; weighting, determinism, batch independence.

Scores as in test_samplers (``problem``, ``score``): relative error of the batch mean against
the posterior mean (= MAP for a Gaussian prior), 1 for the prior mean. RED-Diff is a point
estimate whose last Adam steps jitter by about ``lr``, so the per-element error is also
checked. Measured (d = 16, m = 8, sigma = 0.1, 400 elements, defaults but 500 steps): batch
mean 0.068, per-element median 0.15 (50 steps 0.41 / 0.43, 200 steps 0.14 / 0.20, 1000 steps
0.036 / 0.14); complex 0.041 / 0.076. Without the prior (lam = 0) the result stays at the
pseudo-inverse start: 0.60 (complex 0.55).
"""

import math

import pytest
import torch
from test_samplers import problem, score

from operators import Downsampling, Inpainting, box_mask
from priors import DiffusionPrior, Normalization, VPSchedule
from priors.unet import from_guided_diffusion
from recon.samplers import REDDiff

DRAWS = 400
GOOD, GOOD_EACH, BAD = 0.15, 0.25, 0.5


pytestmark = pytest.mark.usefixtures("one_thread")


def run(sampler, physics, y, seed: int = 1, batch: int = DRAWS) -> torch.Tensor:
    return sampler(y.expand(batch, *y.shape[1:]), physics, generator=torch.Generator().manual_seed(seed))


def per_element(prior, x, post) -> torch.Tensor:
    z = prior.encode(x).reshape(x.shape[0], -1).double()
    return (z - post.mean).norm(dim=1) / (prior.mixture.mean - post.mean).norm()


def test_approaches_posterior_mean_and_needs_the_prior():
    prior, physics, y, post = problem()
    x = run(REDDiff(prior, steps=500), physics, y)
    assert x.shape == (DRAWS, *physics.in_shape)
    assert score(prior, x, post) < GOOD
    assert float(per_element(prior, x, post).median()) < GOOD_EACH
    assert score(prior, run(REDDiff(prior, steps=500, lam=0.0), physics, y), post) > BAD


def test_complex_data_approaches_posterior_mean():
    prior, physics, y, post = problem(complex_data=True)
    x = run(REDDiff(prior, steps=500), physics, y)
    assert x.is_complex() and score(prior, x, post) < GOOD


def test_explicit_sigma_maps_onto_the_reference_weighting():
    """``sigma=None`` is ``sigma = scale sqrt(m / d)``; ``lam sigma^2`` is what matters."""
    prior, physics, y, _ = problem()
    reference = run(REDDiff(prior, steps=50), physics, y, batch=4)
    assert torch.equal(reference, run(REDDiff(prior, steps=50, sigma=math.sqrt(8 / 16)), physics, y, batch=4))
    rescaled = run(REDDiff(prior, steps=50, sigma=0.1, lam=0.25 * 0.5 / 0.01), physics, y, batch=4)
    assert torch.allclose(reference, rescaled, atol=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        REDDiff(prior, sigma=0.0)


def test_first_step_with_a_unet_prior_on_imaging_operators():
    """Image-shaped path, a tiny untrained UNet, known answers: the start is the pseudo-inverse
    (inpainting: ``y`` where observed, ``decode(0)`` in the hole; 2x area downsampling: every pixel
    its block's measurement) and Adam's first step moves every model-space value by ``lr`` against
    the sign of its gradient, at the inpainting start the regulariser's ``lam w(t) (eps_hat - eps)``
    alone (the data residual is 0). Measured: inpainting within 6e-4 (3e-5 but where that gradient is
    below 1e-6 and the data term's rounding competes), the opposite sign 0.05 away and the start
    0.025 (lr 0.1 times the scale 0.25); downsampling (lr 1e-6) within 3e-7, with lr 0.1 0.025."""
    torch.manual_seed(0)
    net = from_guided_diffusion({"image_size": 16, "in_channels": 1, "num_channels": 32, "num_res_blocks": 1,
                                 "channel_mult": "1,2", "attention_resolutions": "", "learn_sigma": True})
    prior = DiffusionPrior(net, VPSchedule.linear(), Normalization(0.25, 0.25))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    mask = box_mask((16, 16), 0.25, seed=0)
    inpainting = Inpainting(mask)
    y = inpainting(x)
    start = torch.where(mask.bool(), y, torch.full_like(y, 0.25))
    out = REDDiff(prior, steps=1)(y, inpainting, generator=torch.Generator().manual_seed(2))
    eps = torch.randn(start.shape, generator=torch.Generator().manual_seed(2))  # the sampler's first draw
    abar = float(prior.schedule.alpha_bar(0, torch.float64))  # steps=1 keeps t = 0 alone
    mu = prior.encode(start)
    eps_hat = prior.eps(math.sqrt(abar) * mu + math.sqrt(1 - abar) * eps, 0)
    torch.testing.assert_close(out, prior.decode(mu - 0.1 * torch.sign(eps_hat - eps)), rtol=0, atol=1e-3)
    downsampling = Downsampling((1, 16, 16), 2)
    y = downsampling(x)
    out = REDDiff(prior, steps=1, lr=1e-6)(y, downsampling, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, y.repeat_interleave(2, -1).repeat_interleave(2, -2), rtol=0, atol=1e-6)
