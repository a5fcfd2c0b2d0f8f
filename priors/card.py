"""Model cards: reading a card's YAML and the one parse of its schedule, normalisation and channels.

A model card is a mapping with ``network`` (guided-diffusion ``create_model`` arguments),
``schedule`` (``{name, steps}``: a :meth:`~priors.schedule.VPSchedule.from_name` schedule of
``steps`` training steps), ``normalization`` (:class:`~priors.prior.Normalization` fields:
``offset`` and ``scale`` in the image's physical units, ``complex_channels``, ``units``) and
free-form ``data``, ``training``, ``quality`` sections. Loading (:mod:`priors.checkpoint`,
:mod:`priors.shards`), training (:mod:`priors.train`) and the registry all parse cards here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .prior import Normalization
from .schedule import VPSchedule
from .unet import GUIDED_DIFFUSION_DEFAULTS

__all__ = ["CardSpec", "CheckpointError", "card_text", "parse_card", "read_card"]

DEFAULT_SCHEDULE = "linear"
DEFAULT_STEPS = 1000
MAX_STEPS = 100_000  # training steps of a VP schedule; more is a corrupt card, not a model


class CheckpointError(ValueError):
    """A prior checkpoint or model card is missing, unreadable or does not fit its config."""


@dataclass(frozen=True)
class CardSpec:
    """What a card says about its prior, with defaults filled in.

    ``channels`` is the network's ``in_channels`` (model-space channels C): as the network is
    built (:func:`~priors.unet.from_guided_diffusion`), absent means guided-diffusion's
    default 3.
    """

    network: dict[str, Any]
    schedule: VPSchedule
    normalization: Normalization
    channels: int


def parse_card(card: Mapping[str, Any], source: str = "") -> CardSpec:
    """The network config, VP schedule (default linear, 1000 steps), normalisation (default
    identity) and channels of ``card``; ``source`` (a path) prefixes errors."""
    where = f"{source}: " if source else ""
    network = card.get("network")
    if not isinstance(network, Mapping):
        raise CheckpointError(f"{where}model card needs a 'network' mapping of guided-diffusion arguments")
    sections = {key: card.get(key, {}) or {} for key in ("schedule", "normalization")}
    for key, value in sections.items():
        if not isinstance(value, Mapping):
            raise CheckpointError(f"{where}model card's {key!r} must be a mapping, got {type(value).__name__}")
    sched = sections["schedule"]
    try:
        steps = _integer(sched.get("steps", DEFAULT_STEPS), "schedule.steps")
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"schedule.steps must be between 1 and {MAX_STEPS}, got {steps}")
        schedule = VPSchedule.from_name(str(sched.get("name", DEFAULT_SCHEDULE)), steps)
        normalization = Normalization.from_dict(sections["normalization"])
        if not (math.isfinite(normalization.offset) and math.isfinite(normalization.scale)
                and normalization.scale != 0):
            raise ValueError(f"normalization offset and scale must be finite (scale non-zero), got "
                             f"{normalization.offset} and {normalization.scale}")
        channels = _integer(network.get("in_channels", GUIDED_DIFFUSION_DEFAULTS["in_channels"]),
                            "network.in_channels")
    except (TypeError, ValueError, OverflowError) as err:
        raise CheckpointError(f"{where}invalid model card: {' '.join(str(err).split())}") from None
    return CardSpec(dict(network), schedule, normalization, channels)


def _integer(value: Any, key: str) -> int:
    """``value`` as an int: an int or integral number/string; ValueError naming ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return int(number)


def read_card(path: str | Path) -> dict[str, Any]:
    """Read a YAML model card; it must hold a ``network`` mapping."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model card not found")
    try:
        card = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not valid YAML ({first})") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read model card ({err.strerror or err})") from None
    if not isinstance(card, dict) or not isinstance(card.get("network"), dict):
        raise CheckpointError(f"{path}: model card needs a 'network' mapping of guided-diffusion arguments")
    return card


def card_text(card: Mapping[str, Any]) -> str:
    """The model card as YAML text (keys in their given order)."""
    return yaml.safe_dump(dict(card), sort_keys=False)
