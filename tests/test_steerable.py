"""LoRA adapters (priors.lora) and Steerable Conditional Diffusion (recon.samplers.steerable)."""

import pytest
import torch
from omegaconf import OmegaConf

from operators import parallel_beam_ct
from priors import load_prior
from priors.lora import add_lora, lora_layers, lora_parameters, remove_lora, reset_lora, with_lora
from priors.unet import from_guided_diffusion
from recon.config import load_config
from recon.data.phantoms import make_phantom
from recon.engine import Engine
from recon.errors import ConfigError
from recon.samplers import DDS, DiffPIR, Steerable

pytestmark = pytest.mark.usefixtures("one_thread")


def random_unet() -> torch.nn.Module:
    """A tiny UNet with attention (Conv1d, Linear, Conv2d layers), every weight random (no zero layers)."""
    net = from_guided_diffusion({"image_size": 16, "in_channels": 1, "num_channels": 32, "num_res_blocks": 1,
                                 "channel_mult": "1,2", "attention_resolutions": "8", "num_head_channels": 32})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def test_lora_starts_as_the_base_network_and_removes_cleanly():
    net = random_unet()
    x, t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([3.0, 700.0])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        reference = net(x, t)
    names = add_lora(net, rank=4)
    kinds = {type(layer.base).__name__ for layer in lora_layers(net).values()}
    assert kinds == {"Conv1d", "Conv2d", "Linear"} and len(names) == len(lora_layers(net))
    assert not any("time_embed" in n or n.startswith("out.") for n in names)  # default: res and attention blocks
    with torch.no_grad():
        assert torch.equal(net(x, t), reference)  # the zero update is exact
    with pytest.raises(ValueError, match="already holds"):
        add_lora(net)
    # only the adapters train; an Adam step changes the output but no base weight
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(net)}
    optimizer = torch.optim.Adam(lora_parameters(net), lr=1e-2)
    net(x, t).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(net(x, t), reference, atol=1e-4)
    reset_lora(net)
    with torch.no_grad():
        assert torch.equal(net(x, t), reference)
    remove_lora(net)
    assert not lora_layers(net) and all(p.requires_grad for p in net.parameters())
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(net(x, t), reference)


def test_lora_layer_patterns_and_bad_requests():
    net = random_unet()
    with with_lora(net, rank=2, layers=["output_blocks.*"]) as params:
        assert params and all(n.startswith("output_blocks.") for n in lora_layers(net))
    assert not lora_layers(net)
    with pytest.raises(ValueError, match="no Conv1d"):
        add_lora(net, layers=["nothing.*"])
    with pytest.raises(ValueError, match="rank"):
        add_lora(net, rank=0)
    assert not lora_layers(net)


@pytest.fixture(scope="module")
def ct_problem():
    """The bundled CT prior on a 32 x 32 ellipse-free target (a bright square and a ramp: out of its
    distribution), 12 parallel-beam views, a noiseless measurement."""
    prior = load_prior("ct-phantom-128")
    n = 32
    x = torch.as_tensor(make_phantom("head", "test", 0, n)).float().reshape(1, 1, n, n)
    x[..., 8:16, 8:16] = 0.45
    x = x + 0.1 * torch.linspace(0, 1, n)
    physics = parallel_beam_ct(n, 12, pixel_size=0.8)
    return prior, physics, physics(x), x


def test_adaptation_lowers_the_data_consistency_loss(ct_problem):
    """At a mid-level noise step, 10 Adam steps of the adapters on ||A x0 - y||^2 / ||y||^2 lower it;
    the base weights stay as they were. Measured: 0.0067 -> 0.00066 (x 0.10) at the tenth step."""
    prior, physics, y, x = ct_problem
    before = {k: v.clone() for k, v in prior.network.state_dict().items()}
    scd = Steerable(DDS(prior, steps=10), steps=10, lr=1e-2)
    z = (prior.schedule.alpha_bar(200).sqrt() * prior.encode(x)
         + (1 - prior.schedule.alpha_bar(200)).sqrt() * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    with with_lora(prior.network, rank=4) as params:
        from recon.samplers.steerable import SteeredPrior

        steered = SteeredPrior(prior, torch.optim.Adam(params, lr=1e-2), 10, {200}, scd._loss(y, physics))
        with torch.no_grad():
            steered.eps(z, 200)
        first, last = steered.history[0][1:]
    assert last < 0.2 * first, (first, last)
    after = prior.network.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("make", [lambda p: DDS(p, steps=6, clamp=(-1.0, 1.0)),
                                  lambda p: DiffPIR(p, steps=6, zeta=1.0, noise=0.01),
                                  lambda p: DiffPIR(p, steps=6, zeta=1.0, noise=0.01, spacing="quad")],
                         ids=["dds", "diffpir", "diffpir_quad"])
def test_zero_adapt_steps_equal_the_plain_sampler_and_adapting_changes_it(ct_problem, make):
    prior, physics, y, _ = ct_problem
    sampler = make(prior)
    run = lambda m: m(y, physics, generator=torch.Generator().manual_seed(3))  # noqa: E731
    plain = run(sampler)
    assert torch.equal(run(Steerable(sampler, steps=0)), plain)
    scd = Steerable(sampler, steps=2, lr=1e-2, every=2, last=1)
    adapted = run(scd)
    assert not torch.equal(adapted, plain) and torch.isfinite(adapted).all()
    assert scd.nfe == 6 + 2 * len(scd.adapt_timesteps()) and len(scd.last_run.history) == len(scd.adapt_timesteps())
    assert not lora_layers(prior.network)  # removed after the run
    assert torch.equal(run(sampler), plain)  # and the prior is untouched


def test_below_restricts_the_adapted_steps(ct_problem):
    prior = ct_problem[0]
    everything = Steerable(DDS(prior, steps=20), every=5, last=2).adapt_timesteps()
    late = Steerable(DDS(prior, steps=20), every=5, last=2, below=0.5).adapt_timesteps()
    assert len(everything) == 6 and 0 < len(late) < len(everything) and set(late) <= set(everything)
    with pytest.raises(ValueError, match="below"):
        Steerable(DDS(prior), below=0)


def test_cli_config_runs_end_to_end_and_matches_dds_sparse_ct():
    """scd_ct repeats dds_sparse_ct's settings under the name scd; a tiny run through the app's path."""
    for scd, plain in [("scd_ct", "dds_sparse_ct"), ("scd_mri", "diffpir_mri")]:
        a = OmegaConf.to_container(load_config([f"samplers=[{scd}]"]).samplers.scd)
        b = OmegaConf.to_container(load_config([f"samplers=[{plain}]"]).samplers[plain.split("_")[0]])
        assert a.pop("adapt")["steps"] > 0 and a == b
    cfg = load_config(["task=sparse_ct", "samplers=[scd_ct]", "baselines=[]", "data.size=32", "samplers.scd.steps=4",
                       "samplers.scd.adapt.every=2", "samplers.scd.adapt.below=100"])
    outcome = Engine(cfg, progress=False).run()
    (result,) = outcome.results.values()
    assert result.metrics["nfe"] > 4 and result.metrics["psnr"] > 10
    with pytest.raises(ConfigError, match="samplers.scd.adapt: .*lr"):
        Engine(load_config(["task=sparse_ct", "samplers=[scd_ct]", "baselines=[]", "data.size=32",
                            "samplers.scd.adapt.lr=-1"]), progress=False)
    with pytest.raises(ConfigError, match="samplers.dds.adapt"):
        Engine(load_config(["task=sparse_ct", "samplers=[dds]", "baselines=[]", "data.size=32",
                            "+samplers.dds.adapt.nonsense=1"]), progress=False)


def test_library_reconstruct_takes_adapter_settings():
    """reconstruct(adapt=...) wraps the sampler: steps=0 is the plain sampler bit for bit; adapting changes it."""
    from recon.api import reconstruct

    truth = torch.from_numpy(make_phantom("head", "test", 0, 32))[None, None]
    physics = parallel_beam_ct(32, views=8, pixel_size=0.8)
    y = physics(truth)
    prior = load_prior("ct-phantom-128")
    run = lambda **kw: reconstruct(y, physics, prior, "dds", steps=6, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    plain = run()
    assert torch.equal(run(adapt={"steps": 0}), plain)
    adapted = run(adapt={"steps": 2, "lr": 1e-2, "every": 1})
    assert not torch.allclose(adapted, plain)
