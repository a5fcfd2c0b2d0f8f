"""Saving and loading diffusion priors.

Two formats:

* **recon checkpoints**: ``NAME.safetensors`` (the network's state dict) beside
  ``NAME.yaml``, the model card: ``network`` (guided-diffusion ``create_model``
  arguments), ``schedule`` (``{name, steps}``), ``normalization``
  (:class:`~priors.prior.Normalization` fields) and free-form ``data``, ``training``,
  ``quality`` sections.
* **guided-diffusion ``.pt`` state dicts** as published with DDS/DPS, read with
  ``torch.load(weights_only=True)`` (no code is unpickled) and described by a YAML file of
  the same form as the model card (at least ``network``).

Cards are read and parsed by :mod:`priors.card`; files are written by :mod:`priors.atomic`.

A checkpoint that does not fit its network config is an error naming the first
mismatching parameter; nothing is ever randomly initialised silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .atomic import write_atomic
from .card import CheckpointError, card_text, parse_card, read_card
from .prior import DiffusionPrior
from .unet import check_state_dict, from_guided_diffusion

# Re-exported: the card and atomic-write helpers were defined here before priors.card/priors.atomic.
__all__ = ["CheckpointError", "card_text", "export_state", "load_checkpoint", "prior_from_card", "read_card",
           "save_checkpoint", "write_atomic"]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: report, never unpickle further
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:300]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of parameter names to tensors)")
    return state


def prior_from_card(card: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None,
                    source: str = "") -> DiffusionPrior:
    """Build a :class:`DiffusionPrior` from a model card (:func:`priors.card.parse_card`) and
    (optionally) its weights."""
    spec = parse_card(card, source)
    where = f"{source}: " if source else ""
    if state_dict is not None:
        for name, tensor in state_dict.items():
            if tensor.is_floating_point() or tensor.is_complex():
                if not bool(torch.isfinite(tensor).all()):
                    raise CheckpointError(f"{where}tensor {name!r} holds NaN or Inf")
    try:
        if state_dict is not None:  # check the card's network against the weights before allocating it
            with torch.device("meta"):
                check_state_dict(from_guided_diffusion(spec.network), state_dict)
        network = from_guided_diffusion(spec.network, state_dict)
    except (ValueError, TypeError, RuntimeError, KeyError, ZeroDivisionError, OverflowError, AttributeError,
            IndexError) as err:  # card values of the wrong type or range, weights that do not fit
        raise CheckpointError(f"{where}{' '.join(str(err).split())}") from None
    prior = DiffusionPrior(network.eval(), spec.schedule, spec.normalization, channels=spec.channels, card=card)
    prior.requires_grad_(False)
    return prior


def load_checkpoint(path: str | Path, card_path: str | Path | None = None) -> DiffusionPrior:
    """Load ``path`` (``.safetensors`` or guided-diffusion ``.pt``) with its YAML card.

    The card defaults to ``path`` with the suffix ``.yaml``.
    """
    path = Path(path)
    card_path = Path(card_path) if card_path is not None else path.with_suffix(".yaml")
    card = read_card(card_path)
    return prior_from_card(card, _read_state_dict(path), source=str(path))


def export_state(network: torch.nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``network``'s state dict as contiguous CPU tensors of ``dtype``, ready to save."""
    return {k: v.detach().to(dtype).contiguous().cpu() for k, v in network.state_dict().items()}


def save_checkpoint(path: str | Path, network: torch.nn.Module, card: Mapping[str, Any],
                    dtype: torch.dtype = torch.float32) -> None:
    """Write ``path`` (``.safetensors``) and its card ``path.with_suffix('.yaml')`` atomically.

    ``dtype=torch.float16`` halves the file (bundled priors); loading casts back to the
    network's float32 parameters. :func:`priors.shards.save_sharded` writes the same weights
    as several files of bounded size.
    """
    from safetensors.torch import save

    path = Path(path)
    write_atomic(path, save(export_state(network, dtype)))
    write_atomic(path.with_suffix(".yaml"), card_text(card))
