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

A checkpoint that does not fit its network config is an error naming the first
mismatching parameter; nothing is ever randomly initialised silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from .prior import DiffusionPrior, Normalization
from .schedule import VPSchedule
from .unet import from_guided_diffusion


class CheckpointError(ValueError):
    """A prior checkpoint or model card is missing, unreadable or does not fit its config."""


def read_card(path: str | Path) -> dict[str, Any]:
    """Read a YAML model card; it must hold a ``network`` mapping."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model card not found")
    try:
        card = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(card, dict) or not isinstance(card.get("network"), dict):
        raise CheckpointError(f"{path}: model card needs a 'network' mapping of guided-diffusion arguments")
    return card


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: report, never unpickle further
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of parameter names to tensors)")
    return state


def prior_from_card(card: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None,
                    source: str = "") -> DiffusionPrior:
    """Build a :class:`DiffusionPrior` from a model card and (optionally) its weights."""
    network_cfg = dict(card["network"])
    try:
        network = from_guided_diffusion(network_cfg, state_dict)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}" if source else str(err)) from None
    sched = card.get("schedule", {}) or {}
    schedule = VPSchedule.from_name(str(sched.get("name", "linear")), int(sched.get("steps", 1000)))
    normalization = Normalization.from_dict(card.get("normalization", {}) or {})
    in_ch = int(network_cfg.get("in_channels", 3))
    prior = DiffusionPrior(network.eval(), schedule, normalization, channels=in_ch, card=card)
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


def write_atomic(target: str | Path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``target`` atomically: a temporary file in the
    same folder, fsync, then ``os.replace``; a reader never sees a half-written file and an
    error leaves the previous file (if any) intact. The folder is created if needed."""
    import os
    import tempfile

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def card_text(card: Mapping[str, Any]) -> str:
    """The model card as YAML text (keys in their given order)."""
    return yaml.safe_dump(dict(card), sort_keys=False)


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
