"""DiffusionPrior units and Tweedie; checkpoint formats and their errors."""

import pytest
import torch

from priors import CheckpointError, DiffusionPrior, Normalization, VPSchedule, load_prior, save_checkpoint
from priors.unet import from_guided_diffusion

SMALL = {
    "image_size": 32, "in_channels": 1, "num_channels": 32, "num_res_blocks": 1,
    "channel_mult": "1,2", "attention_resolutions": "", "learn_sigma": True,
    "use_scale_shift_norm": True,
}


def card(network=SMALL):
    return {
        "name": "tiny", "network": dict(network),
        "schedule": {"name": "linear", "steps": 1000},
        "normalization": {"offset": 0.25, "scale": 0.25, "units": "1/cm"},
    }


def test_encode_decode_roundtrip_real_and_complex():
    net = from_guided_diffusion(SMALL)
    prior = DiffusionPrior(net, VPSchedule.linear(), Normalization(0.25, 0.25))
    x = torch.rand(2, 1, 8, 8) * 0.5
    assert torch.allclose(prior.decode(prior.encode(x)), x, atol=1e-7)
    assert prior.encode(torch.full((1, 1, 2, 2), 0.5)).max() == pytest.approx(1.0)
    cplx = DiffusionPrior(net, VPSchedule.linear(), Normalization(scale=2.0, complex_channels=True), channels=2)
    xc = torch.randn(2, 1, 8, 8, dtype=torch.complex64)
    z = cplx.encode(xc)
    assert z.shape == (2, 2, 8, 8)
    assert torch.allclose(cplx.decode(z), xc)


def test_tweedie_uses_eps_channels_and_schedule():
    torch.manual_seed(0)
    net = from_guided_diffusion(SMALL)
    prior = DiffusionPrior(net, VPSchedule.linear(), Normalization())
    z = torch.randn(2, 1, 32, 32)
    t = torch.tensor([10, 700])
    eps = net(z, t.float())[:, :1]
    abar = VPSchedule.linear().alpha_bar(t).reshape(-1, 1, 1, 1)
    assert torch.allclose(prior.eps(z, t), eps, atol=1e-6)
    assert torch.allclose(prior.x0(z, t), (z - (1 - abar).sqrt() * eps) / abar.sqrt(), atol=1e-5)
    assert torch.allclose(prior.score(z, t), -eps / (1 - abar).sqrt(), atol=1e-5)


def test_safetensors_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = from_guided_diffusion(SMALL)
    save_checkpoint(tmp_path / "tiny.safetensors", net, card())
    prior = load_prior(tmp_path / "tiny.safetensors")
    z = torch.randn(1, 1, 32, 32)
    assert torch.equal(prior.network(z, torch.tensor([5.0])), net(z, torch.tensor([5.0])))
    assert prior.normalization.offset == 0.25


def test_guided_diffusion_pt_is_loaded_without_unpickling(tmp_path):
    net = from_guided_diffusion(SMALL)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model.yaml").write_text("network:\n" + "".join(f"  {k}: {v!r}\n" for k, v in SMALL.items()).replace("'", '"'))
    prior = load_prior(tmp_path / "model.pt")
    assert prior.channels == 1

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "evil.yaml").write_text((tmp_path / "model.yaml").read_text())
    with pytest.raises(CheckpointError, match="evil.pt: cannot read checkpoint"):
        load_prior(tmp_path / "evil.pt")


def test_mismatching_checkpoint_names_the_first_bad_parameter(tmp_path):
    net = from_guided_diffusion(SMALL)
    save_checkpoint(tmp_path / "tiny.safetensors", net, card({**SMALL, "num_channels": 64}))
    with pytest.raises(CheckpointError, match=r"tiny.safetensors: parameter 'time_embed.0.weight' has shape"):
        load_prior(tmp_path / "tiny.safetensors")


def test_missing_files_and_unknown_names(tmp_path):
    with pytest.raises(CheckpointError, match="unknown prior 'no-such-prior'"):
        load_prior("no-such-prior")
    with pytest.raises(CheckpointError, match="model card not found"):
        load_prior(tmp_path / "absent.safetensors")
    (tmp_path / "absent.yaml").write_text("network: {}\n")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_prior(tmp_path / "absent.safetensors")
    (tmp_path / "bad.yaml").write_text("name: x\n")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="needs a 'network' mapping"):
        load_prior(tmp_path / "bad.safetensors")
