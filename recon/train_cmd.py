"""``python -m recon train prior=NAME``: train a diffusion prior from its config.

Resumes from ``out/train_state.pt`` when present; writes the EMA weights and a completed
model card (training facts, measured denoising quality on held-out images) to ``export``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .io.images import load_npy_images
from .run import resolve_device

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


def warm_start(trainer: "Trainer", checkpoint: str) -> None:
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


def train(cfg: DictConfig) -> Path:
    """Train as configured; returns the exported checkpoint path."""
    from tqdm import tqdm

    from priors.train import Trainer, TrainSettings, denoising_quality

    device = resolve_device(str(cfg.device))
    prior_cfg = OmegaConf.to_container(cfg.prior, resolve=True)
    card = {k: prior_cfg[k] for k in ("name", "network", "schedule", "normalization")}
    card["data"] = {**prior_cfg["data"], "split": "train"}
    settings = TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True), seed=int(cfg.seed))
    trainer = Trainer(card, training_images(cfg.prior.data), cfg.out, settings, device)
    if trainer.try_resume():
        print(f"resuming {cfg.out} at step {trainer.step}")
    elif cfg.get("init"):
        warm_start(trainer, str(cfg.init))
    bar = tqdm(total=settings.steps, initial=trainer.step, desc=f"train {card['name']}", unit="step")

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    trainer.train(progress=progress)
    bar.close()
    quality = denoising_quality(trainer.ema_prior(), held_out_images(cfg.prior.data, int(cfg.eval_images)))
    export = Path(str(cfg.export))
    trainer.export(export, quality)
    print(f"exported {export} (+ {export.with_suffix('.yaml').name}); quality: {quality['psnr_db']}")
    return export
