"""``python -m recon train prior=NAME``: train a diffusion prior from its config.

The network, schedule and normalisation come from the prior's model card (:func:`training_card`),
with the config's non-null ``prior.network`` / ``prior.schedule`` / ``prior.normalization`` keys
merged over them; the config adds the name and the training data.

Resumes from ``out/train_state.pt`` when present; writes the EMA weights and a completed
model card (training facts, measured denoising quality on held-out images) to ``export``.
``train.minutes`` bounds the training loop's wall time (it stops, checkpoints and exports at
the step reached; a rerun resumes); ``train.shard_mib`` writes the export as safetensors shards
of at most that many MiB that carry the card too; ``train.export_dtype`` (float32, float16,
bfloat16) sets the exported weights' precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from .build import resolve_device
from .errors import ConfigError
from .io.images import load_npy_images

if TYPE_CHECKING:
    from priors.train import Trainer


def training_images(data: DictConfig) -> torch.Tensor:
    """``(N, 1, H, W)`` training images in physical units (float32, or complex64 from a complex .npy)."""
    source = str(data.source)
    if source == "phantoms":
        from .data.phantoms import make_phantoms

        return torch.from_numpy(make_phantoms(str(data.kind), "train", int(data.count), int(data.size)))
    if source == "npy":
        if not data.get("path"):
            raise ConfigError("prior.data.path: set the training images (.npy) to train on")
        return load_npy_images(Path(str(data.path)))
    raise ConfigError(f"prior.data.source={source}: expected phantoms or npy")


ARCHITECTURE = ("network", "schedule", "normalization")


def base_card(prior: DictConfig) -> dict[str, Any]:
    """The model card a training starts from, named by ``prior.train_card`` or else by
    ``prior.name``: a bundled prior's card (``priors/weights/NAME.yaml``), a published card
    (``priors/cards/NAME.yaml``) or a card path. Empty when only ``prior.name`` is set and it
    names no card (a config that gives the whole network itself); ``prior.card``, the card of
    a checkpoint to load, plays no part."""
    from priors.card import CheckpointError, read_card
    from priors.registry import WEIGHTS_DIR, resolve_card

    given = prior.get("train_card")
    name = str(given or prior.name)
    path = resolve_card(name)  # the path as given, or priors/cards/NAME.yaml
    if not path.is_file() and (WEIGHTS_DIR / f"{name}.yaml").is_file():
        path = WEIGHTS_DIR / f"{name}.yaml"
    if not given and not path.is_file():
        return {}
    try:
        return read_card(path)
    except CheckpointError as err:
        raise ConfigError(f"prior.train_card: {err}") from None


def training_card(prior: DictConfig) -> dict[str, Any]:
    """The model card to train (before the training facts): ``name``, then ``network``,
    ``schedule`` and ``normalization`` from :func:`base_card` with the config's non-null
    values of those sections put over them key by key (the card's key order kept, new keys
    after), then ``data`` (the config's recipe, ``split: train``)."""
    node = OmegaConf.to_container(prior, resolve=True)
    base = base_card(prior)
    card: dict[str, Any] = {"name": node["name"]}
    for section in ARCHITECTURE:
        given = {k: v for k, v in (node.get(section) or {}).items() if v is not None}
        card[section] = {**(base.get(section) or {}), **given}
    if not card["network"]:
        raise ConfigError(f"prior.name={node['name']}: no model card of that name to take the network from; set "
                          "prior.train_card (a bundled prior's name, e.g. ct-phantom-128, or a card path)")
    if not isinstance(node.get("data"), dict):
        raise ConfigError(f"prior.data: prior {node['name']} has no training data recipe in its config")
    card["data"] = {**node["data"], "split": "train"}
    return card


def held_out_images(data: DictConfig, count: int) -> torch.Tensor:
    """Held-out images for the quality report: test-split phantoms, or the first ``count`` of
    ``data.eval_path`` (a .npy like the training file) for npy data; empty when neither."""
    if count <= 0:
        return torch.zeros(0)
    if str(data.source) == "phantoms":
        from .data.phantoms import make_phantoms

        return torch.from_numpy(make_phantoms(str(data.kind), "test", count, int(data.size)))
    if data.get("eval_path"):
        return load_npy_images(Path(str(data.eval_path)))[:count]
    return torch.zeros(0)


def warm_start(trainer: Trainer, checkpoint: str) -> None:
    """Start network and EMA from ``checkpoint``'s weights (fresh optimiser, step 0)."""
    from priors import CheckpointError, load_prior

    try:
        weights = load_prior(checkpoint).network.state_dict()
        trainer.network.load_state_dict(weights)
        trainer.ema.load_state_dict(weights)
    except (CheckpointError, RuntimeError) as err:
        raise ConfigError(f"init={checkpoint}: {str(err).splitlines()[0]}") from None
    trainer.settings.extra["init"] = checkpoint
    print(f"warm start from {checkpoint}")


def process_group(device: torch.device) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``: under ``torchrun`` (``WORLD_SIZE`` > 1) join the process
    group (gloo on CPU, NCCL on CUDA, each process on GPU ``LOCAL_RANK``); else ``(0, 1, device)``."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def train(cfg: DictConfig) -> Path:
    """Train as configured; returns the exported checkpoint path (the first shard when
    ``train.shard_mib`` is set: :func:`priors.load_prior` loads the set from it). Under ``torchrun
    --nproc_per_node N`` it trains data-parallel (``train.batch_size`` per process); rank 0
    alone shows progress, checkpoints and exports."""
    rank, world, device = process_group(resolve_device(str(cfg.device)))
    try:
        return _train(cfg, device, rank)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


def _train(cfg: DictConfig, device: torch.device, rank: int) -> Path:
    from tqdm import tqdm

    from priors.train import Trainer, TrainSettings, denoising_quality

    card = training_card(cfg.prior)
    try:
        settings = TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True), seed=int(cfg.seed))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"train: {err}") from None
    trainer = Trainer(card, training_images(cfg.prior.data), cfg.out, settings, device)
    if trainer.try_resume():
        print(f"resuming {cfg.out} at step {trainer.step}")
    elif cfg.get("init"):
        warm_start(trainer, str(cfg.init))
    bar = tqdm(total=settings.steps, initial=trainer.step, desc=f"train {card['name']}", unit="step",
               disable=rank != 0)

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    trainer.train(progress=progress)
    bar.close()
    if trainer.stopped_by_budget and rank == 0:
        print(f"time budget of {settings.minutes} min reached: stopped at step {trainer.step} of {settings.steps} "
              f"(checkpoint in {cfg.out}; rerun with the same out to resume)")
    export = Path(str(cfg.export))
    if rank != 0:
        return export
    quality = denoising_quality(trainer.ema_prior(), held_out_images(cfg.prior.data, int(cfg.eval_images)))
    files = trainer.export(export, quality)
    names = ", ".join(f.name for f in files)
    print(f"exported {names} (+ {export.with_suffix('.yaml').name}) in {export.parent}; quality: {quality['psnr_db']}")
    return files[0]
