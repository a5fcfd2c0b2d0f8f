"""Finding priors by name: the bundled ones in ``priors/weights/`` or a checkpoint path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .card import CheckpointError, parse_card, read_card
from .checkpoint import load_checkpoint
from .prior import DiffusionPrior
from .shards import find_shards, is_shard_name, load_sharded

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CARDS_DIR = Path(__file__).resolve().parent / "cards"  # cards of published checkpoints (weights not shipped)


def resolve_card(card: str | Path | None) -> Path | None:
    """A card path as given, or the bundled card ``cards/NAME.yaml`` for a bare name."""
    if card is None:
        return None
    path = Path(card)
    bundled = CARDS_DIR / f"{card}.yaml"
    return bundled if not path.is_file() and path.suffix == "" and bundled.is_file() else path


def available_priors() -> dict[str, dict[str, Any]]:
    """Bundled priors: name -> summary (resolution, channels, units, training data, steps)."""
    out: dict[str, dict[str, Any]] = {}
    for card_path in sorted(WEIGHTS_DIR.glob("*.yaml")):
        if not card_path.with_suffix(".safetensors").is_file():
            continue
        card = read_card(card_path)
        spec = parse_card(card, str(card_path))
        out[card_path.stem] = {
            "resolution": int(spec.network.get("image_size", 0)),
            "channels": spec.channels,
            "units": spec.normalization.units,
            "complex": spec.normalization.complex_channels,
            "data": card.get("data", {}),
            "training_steps": (card.get("training") or {}).get("steps"),
            "path": str(card_path.with_suffix(".safetensors")),
        }
    return out


def _sharded(path: Path) -> bool:
    """Whether ``path`` names a sharded export: a shard's name, or ``NAME.safetensors`` / a stem
    ``NAME`` that is not itself a file (nor, for a bare name, a bundled prior) while shards exist."""
    if is_shard_name(path):
        return True
    if path.is_file() or path.suffix not in {"", ".safetensors"}:
        return False
    if len(path.parts) == 1 and path.suffix == "" and (WEIGHTS_DIR / f"{path}.safetensors").is_file():
        return False
    return bool(find_shards(path))


def load_prior(name_or_path: str | Path, card: str | Path | None = None,
               device: torch.device | str | None = None) -> DiffusionPrior:
    """A bundled prior by name (see :func:`available_priors`) or a checkpoint by path.

    Paths may be ``.safetensors`` (card beside it, ``.yaml``) or a guided-diffusion
    ``.pt`` state dict with its YAML config given as ``card`` (or beside it); ``card`` may
    name a bundled card of a published checkpoint (``priors/cards/``, e.g.
    ``dds_fastmri_knee320_complex``). A sharded export (:mod:`priors.shards`) loads from any
    of its shards' paths, from ``NAME.safetensors`` when only the shards exist, or from the
    stem ``out/NAME``; its card travels inside the first shard. The network runs channels-last
    (:meth:`~priors.prior.DiffusionPrior.use_channels_last`).
    """
    path = Path(name_or_path)
    if _sharded(path):
        prior = load_sharded(path, resolve_card(card))
    else:
        if path.suffix not in {".safetensors", ".pt", ".pth"}:
            bundled = WEIGHTS_DIR / f"{name_or_path}.safetensors"
            if not bundled.is_file():
                names = ", ".join(available_priors()) or "none"
                raise CheckpointError(f"unknown prior {str(name_or_path)!r}; bundled priors: {names}")
            path = bundled
        prior = load_checkpoint(path, resolve_card(card))
    prior = prior.use_channels_last()
    return prior.to(device) if device is not None else prior
