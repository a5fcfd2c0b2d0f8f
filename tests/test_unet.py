"""The ADM UNet against the layouts and outputs of the reference implementation.

Fixtures in tests/data are copied from the project's reference facts: state_dict layouts of
three published checkpoints, and a small configuration with deterministic weights, input and
the reference output.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from priors import UNetModel, from_guided_diffusion
from priors.unet import AttentionBlock, timestep_embedding

DATA = Path(__file__).parent / "data"
MANIFESTS = json.loads((DATA / "adm_manifests.json").read_text())
SMALL = json.loads((DATA / "adm_small_mri.json").read_text())
PARAM_COUNTS = {
    "dds_aapm256_ct": 374_022_658,
    "dds_fastmri_knee320_complex": 361_428_228,
    "dps_ffhq256_rgb": 93_563_910,
}


def layout(model: torch.nn.Module) -> list:
    return [[name, list(p.shape)] for name, p in model.state_dict().items()]


def fill(shapes: list) -> dict[str, torch.Tensor]:
    """The fixture's weights: k-th sorted name gets 0.05 sin(1.618 j + 0.5 k), j flat index."""
    shape_of = dict(shapes)
    weights = {}
    for k, name in enumerate(sorted(shape_of)):
        shape = shape_of[name]
        j = np.arange(math.prod(shape), dtype=np.float64)
        values = (0.05 * np.sin(1.618 * j + 0.5 * k)).astype(np.float32)
        weights[name] = torch.from_numpy(values).reshape(shape)
    return weights


@pytest.mark.parametrize("key", sorted(MANIFESTS))
def test_published_layouts_on_meta_device(key):
    entry = MANIFESTS[key]
    with torch.device("meta"):
        model = from_guided_diffusion(entry["config"])
    assert layout(model) == entry["state_dict"]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == entry["num_params"] == PARAM_COUNTS[key]


def test_meta_model_is_materialised_by_loading():
    with torch.device("meta"):
        model = from_guided_diffusion(SMALL["config"], fill(SMALL["state_dict"]))
    assert not any(p.is_meta for p in model.parameters())


def test_small_config_reproduces_reference_output():
    ref = np.load(DATA / "adm_small_mri.npz")
    model = from_guided_diffusion(SMALL["config"], fill(SMALL["state_dict"])).eval()
    assert layout(model) == SMALL["state_dict"]
    shape = tuple(int(s) for s in ref["input_shape"])
    j = np.arange(math.prod(shape), dtype=np.float64)
    x = torch.from_numpy(np.sin(0.37 * j).astype(np.float32)).reshape(shape)
    with torch.no_grad():
        out = model(x, torch.from_numpy(ref["timesteps"]))
        out_float_t = model(x, torch.from_numpy(ref["timesteps"]).float())
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref["output"], rtol=0, atol=1e-4)
    torch.testing.assert_close(out_float_t, out, rtol=0, atol=0)


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0.0, 3.0, 500.0])
    emb = timestep_embedding(t, 8)
    freqs = 10000.0 ** (-torch.arange(4) / 4)
    args = t[:, None] * freqs
    torch.testing.assert_close(emb, torch.cat([torch.cos(args), torch.sin(args)], dim=1))
    assert timestep_embedding(t, 7).shape == (3, 7)


def test_attention_orders_differ_by_a_qkv_permutation():
    """Legacy order groups qkv channels per head [q_h k_h v_h]; the new one [q, k, v]."""
    torch.manual_seed(0)
    heads, ch = 2, 32
    new, legacy = AttentionBlock(ch, heads, new_order=True), AttentionBlock(ch, heads)
    torch.nn.init.normal_(new.proj_out.weight)
    legacy.load_state_dict(new.state_dict())
    # new-order channel of (part, head, c) sits at legacy position (head, part, c)
    perm = torch.arange(3 * ch).reshape(3, heads, -1).transpose(0, 1).reshape(-1)
    with torch.no_grad():
        legacy.qkv.weight.copy_(new.qkv.weight[perm])
        legacy.qkv.bias.copy_(new.qkv.bias[perm])
    x = torch.randn(2, ch, 4, 4)
    torch.testing.assert_close(legacy(x), new(x))


def test_learn_sigma_and_defaults():
    model = from_guided_diffusion({"image_size": 64, "num_channels": 32, "num_res_blocks": 1,
                                   "learn_sigma": True, "in_channels": 1})
    assert isinstance(model, UNetModel)
    assert (model.in_channels, model.out_channels) == (1, 2)
    # image_size 64 defaults to channel_mult (1, 2, 3, 4): deepest width 4 * 32
    assert model.middle_block[0].in_layers[2].weight.shape[0] == 128
    with pytest.raises(ValueError, match="num_chanels"):
        from_guided_diffusion({"num_chanels": 32})


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.update({"out.2.weight": torch.zeros(4, 32, 1, 1)}),
         r"'out.2.weight'.*\(4, 32, 1, 1\).*\(4, 32, 3, 3\)"),
        (lambda sd: sd.pop("middle_block.1.qkv.bias"), "missing.*'middle_block.1.qkv.bias'"),
        (lambda sd: sd.update({"label_emb.weight": torch.zeros(1000, 128)}),
         "unexpected.*'label_emb.weight'"),
    ],
    ids=["wrong_shape", "missing", "unexpected"],
)
def test_mismatching_state_dict_names_the_parameter(edit, message):
    state_dict = fill(SMALL["state_dict"])
    edit(state_dict)
    with pytest.raises(ValueError, match=message):
        from_guided_diffusion(SMALL["config"], state_dict)
