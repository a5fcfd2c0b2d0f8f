"""Cards of published checkpoints (priors/cards/) and the prior config's scale override."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from priors.checkpoint import read_card
from priors.registry import CARDS_DIR, resolve_card
from priors.unet import from_guided_diffusion
from recon.config import load_config
from recon.errors import ConfigError
from recon.run import build_prior

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
        load_config(["task=mri_multicoil", "prior=dds_fastmri_knee320", "sampler=dds_mri"])


def test_scale_override():
    node = OmegaConf.create({"name": "ct-phantom-128", "checkpoint": None, "card": None, "scale": 0.5})
    prior = build_prior(node, torch.device("cpu"))
    assert prior.normalization.scale == 0.5 and prior.normalization.offset == 0.25
    x = torch.full((1, 1, 8, 8), 0.75)
    assert torch.allclose(prior.encode(x), torch.ones(1, 1, 8, 8))
    node.scale = 0.0
    with pytest.raises(ConfigError, match="prior.scale"):
        build_prior(node, torch.device("cpu"))
