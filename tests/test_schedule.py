"""VP noise schedules and respacing."""

import math

import pytest
import torch

from priors import VPSchedule


def test_linear_endpoints_and_monotone():
    s = VPSchedule.linear(1000)
    assert len(s) == s.num_train_steps == 1000
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-9)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-9)
    torch.testing.assert_close(s.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    abar = s.alphas_cumprod
    assert abar.dtype == torch.float64
    assert bool((abar[1:] < abar[:-1]).all())
    assert abar[0].item() == pytest.approx(1 - 1e-4)
    assert 0 < abar[-1].item() < 1e-4  # ~4.0e-5 for ADM's linear schedule


def test_cosine_is_sane():
    s = VPSchedule.cosine(1000)
    betas, abar = s.betas, s.alphas_cumprod
    assert bool((betas > 0).all()) and betas.max().item() <= 0.999
    assert bool((abar[1:] < abar[:-1]).all())
    # abar_t = f(t+1) / f(0), f(u) = cos((u/T + s) / (1 + s) * pi / 2)^2, away from the clip
    def f(u: float) -> float:
        return math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    assert abar[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)
    assert abar[-1].item() < 1e-6


def test_from_name():
    named = VPSchedule.from_name("cosine", 100)
    torch.testing.assert_close(named.betas, VPSchedule.cosine(100).betas)
    with pytest.raises(ValueError, match="quadratic"):
        VPSchedule.from_name("quadratic", 1000)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("k", [1, 10, 50, 999, 1000])
def test_respacing_is_consistent(name, k):
    full = VPSchedule.from_name(name, 1000)
    s = full.respace(k)
    ts = s.sampling_timesteps()
    assert len(s) == len(ts) == k
    assert ts == sorted(set(ts), reverse=True)
    assert ts[-1] == 0 and (k == 1 or ts[0] == 999)
    torch.testing.assert_close(s.alphas_cumprod, full.alphas_cumprod[s.timesteps], rtol=0, atol=0)
    # the respaced chain's betas give back the kept alphas_cumprod
    chain = torch.cumprod(1 - s.betas, 0)
    torch.testing.assert_close(chain, s.alphas_cumprod, rtol=1e-10, atol=1e-15)
    assert [t for t, _ in s.step_pairs()] == ts
    assert [p for _, p in s.step_pairs()] == ts[1:] + [-1]


def test_respacing_matches_guided_diffusion_spacing():
    # space_timesteps(1000, [50]): round(i * 999 / 49), accumulated
    ts = VPSchedule.linear(1000).respace(50).sampling_timesteps()[::-1]
    assert ts[:4] == [0, 20, 41, 61] and ts[-2:] == [979, 999]
    with pytest.raises(ValueError):
        VPSchedule.linear(1000).respace(1001)


def test_alpha_bar_and_sigma_lookup():
    s = VPSchedule.linear(1000).respace(10)
    t = torch.tensor([999, 0, -1])
    abar = s.alpha_bar(t)
    assert abar.dtype == torch.float32 and abar.shape == (3,)
    expected = torch.cat([s.train_alphas_cumprod[[999, 0]], torch.ones(1, dtype=torch.float64)])
    torch.testing.assert_close(s.alpha_bar(t, torch.float64), expected)
    torch.testing.assert_close(s.sigma(t, torch.float64), (1 - expected).sqrt())
    assert s.sigma(-1).item() == 0.0
    assert s.alpha_bar(500).shape == ()


def test_quad_spacing_is_diffpirs_and_denser_near_clean_data():
    """DiffPIR's "quad" skip: ``sqrt(linspace(0, T^2, K))`` counted from the noisy end, i.e. kept
    ``t_k = (T-1)(1 - sqrt(1 - k/(K-1)))``: at K = 100 the clean end is 5 apart (uniform: 10)."""
    full = VPSchedule.linear(1000)
    s = full.respace(100, "quad")
    kept = s.timesteps.tolist()
    assert kept[:4] == [0, 5, 10, 15] and kept[-3:] == [857, 899, 999]
    assert len(set(kept)) == 100 and kept == sorted(kept)
    reference = [999 - int(v) for v in torch.linspace(0, 1000.0**2, 100, dtype=torch.float64).sqrt()]
    assert max(abs(a - b) for a, b in zip(kept, reference[::-1])) <= 1
    torch.testing.assert_close(torch.cumprod(1 - s.betas, 0), s.alphas_cumprod, rtol=1e-10, atol=1e-15)
    assert full.respace(10, "uniform").timesteps.tolist() == full.respace(10).timesteps.tolist()
    with pytest.raises(ValueError, match="repeats steps"):
        full.respace(600, "quad")
    with pytest.raises(ValueError, match="spacing"):
        full.respace(10, "log")
