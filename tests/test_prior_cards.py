"""Cards of published checkpoints (priors/cards/), the prior config's scale override, and the prior
configs pointing at their cards (the card alone holds network, schedule and normalisation)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from priors.checkpoint import read_card
from priors.registry import CARDS_DIR, resolve_card
from priors.unet import from_guided_diffusion
from recon.build import build_prior
from recon.config import load_config
from recon.errors import ConfigError

MANIFESTS = json.loads((Path(__file__).parent / "data" / "adm_manifests.json").read_text())


def test_fastmri_card_builds_the_published_layout():
    card = read_card(resolve_card("dds_fastmri_knee320_complex"))
    assert resolve_card("dds_fastmri_knee320_complex") == CARDS_DIR / "dds_fastmri_knee320_complex.yaml"
    assert card["normalization"]["complex_channels"] is True
    with torch.device("meta"):
        model = from_guided_diffusion(card["network"])
    layout = [[name, list(p.shape)] for name, p in model.state_dict().items()]
    assert layout == MANIFESTS["dds_fastmri_knee320_complex"]["state_dict"]


def test_published_prior_config_needs_a_checkpoint():
    with pytest.raises(ConfigError, match="prior.checkpoint"):
        load_config(["task=mri_multicoil", "prior=dds_fastmri_knee320", "samplers=dds_mri"])


def test_scale_override():
    node = OmegaConf.create({"name": "ct-phantom-128", "checkpoint": None, "card": None, "scale": 0.5})
    prior = build_prior(node, torch.device("cpu"))
    assert prior.normalization.scale == 0.5 and prior.normalization.offset == 0.25
    x = torch.full((1, 1, 8, 8), 0.75)
    assert torch.allclose(prior.encode(x), torch.ones(1, 1, 8, 8))
    node.scale = 0.0
    with pytest.raises(ConfigError, match="prior.scale"):
        build_prior(node, torch.device("cpu"))


# Every bundled card (priors/weights/, priors/cards/) as the loaders saw it before priors.card
# existed: channels, schedule (name, steps) and normalisation (offset, scale, complex, units).
BUNDLED = {
    "weights/ct-phantom-128": (1, "linear", 1000, 0.25, 0.25, False, "1/cm"),
    "weights/ct-head-256": (1, "linear", 1000, 0.25, 0.25, False, "1/cm"),  # ct-phantom-128 fine-tuned
    "weights/ct-head-128": (1, "linear", 1000, 0.25, 0.25, False, "1/cm"),  # likewise, axial at 1.95 mm
    "weights/ct-head-coronal-128": (1, "linear", 1000, 0.25, 0.25, False, "1/cm"),  # likewise, coronal
    "weights/ct-stripes-64": (1, "linear", 1000, 0.0, 0.05, False, "line integrals"),
    "weights/interference-128": (1, "linear", 1000, 0.0, 0.05, False, "1/cm"),
    "weights/mri-brain-256": (2, "linear", 1000, 0.0, 1.0, True, "a.u. (template max 1)"),
    "cards/dds_fastmri_knee320_complex": (2, "linear", 1000, 0.0, 1.0, True,
                                          "magnitude-normalised complex image (max |x| about 1)"),
}


def test_every_bundled_card_parses_as_before():
    from priors import Normalization, VPSchedule
    from priors.card import parse_card
    from priors.registry import WEIGHTS_DIR, available_priors

    paths = sorted(WEIGHTS_DIR.glob("*.yaml")) + sorted(CARDS_DIR.glob("*.yaml"))
    assert sorted(f"{p.parent.name}/{p.stem}" for p in paths) == sorted(BUNDLED)
    linear = VPSchedule.linear(1000)  # DDPM betas 1e-4 .. 0.02
    for path in paths:
        channels, name, steps, offset, scale, complex_channels, units = BUNDLED[f"{path.parent.name}/{path.stem}"]
        card = read_card(path)
        spec = parse_card(card)
        assert spec.channels == channels == card["network"]["in_channels"]
        assert (card["schedule"]["name"], spec.schedule.num_train_steps) == (name, steps)
        assert torch.equal(spec.schedule.alphas_cumprod, linear.alphas_cumprod)
        assert spec.schedule.alphas_cumprod[-1].item() == pytest.approx(4.0358e-05, rel=1e-4)
        assert spec.normalization == Normalization(offset, scale, complex_channels, units)
        assert spec.network == card["network"]
        if path.parent == WEIGHTS_DIR:  # the registry's summary reads the same parse
            summary = available_priors()[path.stem]
            assert (summary["channels"], summary["units"], summary["complex"]) == (channels, units, complex_channels)


def test_absent_card_fields_take_the_networks_defaults():
    """No in_channels: the network is built with guided-diffusion's 3, and the prior says 3 too;
    no schedule or normalization: linear 1000 steps, identity map."""
    from priors import Normalization, VPSchedule
    from priors.card import CheckpointError, parse_card
    from priors.checkpoint import prior_from_card

    card = {"network": {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
                        "attention_resolutions": ""}}
    spec = parse_card(card)
    prior = prior_from_card(card, None)
    assert spec.channels == prior.channels == prior.network.in_channels == 3
    assert spec.normalization == prior.normalization == Normalization(0.0, 1.0, False, "")
    assert torch.equal(spec.schedule.alphas_cumprod, VPSchedule.from_name("linear", 1000).alphas_cumprod)
    with pytest.raises(CheckpointError, match="card.yaml: model card needs a 'network' mapping"):
        parse_card({"schedule": {}}, source="card.yaml")


# configs/prior/NAME.yaml -> the card it trains from (frozen: a config pointing at another card fails).
CONFIG_CARDS = {
    "ct_phantom": "weights/ct-phantom-128",
    "ct_head": "weights/ct-phantom-128",  # trains from the phantom prior's card (and weights: init=)
    "ct_head_128": "weights/ct-phantom-128",  # likewise
    "ct_head_coronal": "weights/ct-phantom-128",  # likewise
    "mri_brain": "weights/mri-brain-256",
    "noise_interference": "weights/interference-128",
    "noise_stripes": "weights/ct-stripes-64",
    "dds_fastmri_knee320": "cards/dds_fastmri_knee320_complex",
}
ARCHITECTURE = ("network", "schedule", "normalization")


@pytest.mark.parametrize("config", sorted(CONFIG_CARDS))
def test_each_prior_config_resolves_to_the_card_it_names(config):
    """The config repeats none of its card; ``train`` builds exactly the card's network, schedule
    and normalisation (equal values, the card's key order) under the config's name and data."""
    from recon.config import config_root
    from recon.train_cmd import base_card, training_card

    paths = sorted(Path(str(config_root().joinpath("prior"))).glob("*.yaml"))
    assert sorted(p.stem for p in paths) == sorted(CONFIG_CARDS)
    raw = yaml.safe_load(Path(str(config_root().joinpath("prior", f"{config}.yaml"))).read_text())
    assert not set(raw) & set(ARCHITECTURE)
    expected = read_card(CARDS_DIR.parent / f"{CONFIG_CARDS[config]}.yaml")
    cfg = load_config([f"prior={config}", "prior.checkpoint=x.pt"], config_name="train")  # the dds config needs one
    assert base_card(cfg.prior) == expected
    if "data" not in raw:  # the published prior: weights only, no training recipe
        with pytest.raises(ConfigError, match="prior.data"):
            training_card(cfg.prior)
        return
    card = training_card(cfg.prior)
    assert list(card) == ["name", *ARCHITECTURE, "data"] and card["name"] == raw["name"]
    for section in ARCHITECTURE:
        assert card[section] == expected[section] and list(card[section]) == list(expected[section])
    assert card["data"] == {**raw["data"], "split": "train"}
    channels, _, _, offset, scale, complex_channels, units = BUNDLED[CONFIG_CARDS[config]]
    assert (card["network"]["in_channels"], card["normalization"]) == (
        channels, {"offset": offset, "scale": scale, "complex_channels": complex_channels, "units": units})
