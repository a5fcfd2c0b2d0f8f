"""Denoising score matching for :class:`~priors.prior.DiffusionPrior` networks.

Minimises ``E ||eps - eps_theta(sqrt(abar_t) z_0 + sqrt(1-abar_t) eps, t)||^2`` over
uniform training steps ``t``, on random crops of the training images (the UNet without
attention is fully convolutional, so a prior trained on 64x64 crops applies to 128x128 or
larger images). Keeps an EMA of the weights, checkpoints every ``checkpoint_every`` steps
into ``out/`` and resumes from there; every step's randomness derives from ``(seed, step)``,
so an interrupted and resumed run follows the same trajectory as an uninterrupted one.

A wall-clock budget (``minutes``) stops training early at a step boundary, checkpoints there
(a rerun resumes) and is recorded in the card; under ``torch.distributed`` rank 0's clock
decides for all ranks (:class:`TimeBudget`), so every process stops at the same step. The
export is one ``.safetensors`` file or, with ``shard_mib``, shards of bounded size
(:mod:`priors.shards`), in ``export_dtype``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .atomic import atomic_write
from .card import parse_card
from .checkpoint import save_checkpoint
from .prior import DiffusionPrior
from .schedule import VPSchedule
from .shards import find_shards, save_sharded
from .unet import from_guided_diffusion


@dataclass
class TrainSettings:
    """Optimisation settings (see the module docstring)."""

    steps: int = 10000
    batch_size: int = 8
    crop: int = 64
    lr: float = 2e-4
    warmup: int = 200
    ema: float = 0.999
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    seed: int = 0
    hflip: bool = True
    minutes: float | None = None  # wall-clock budget of the training loop; None: no limit
    shard_mib: float | None = None  # export as shards of at most this many MiB; None: one file
    export_dtype: str = "float32"  # float32 | float16 | bfloat16 (loading casts back to float32)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("minutes", "shard_mib"):
            value = getattr(self, name)
            if value is not None and not float(value) > 0:
                raise ValueError(f"{name}={value}: expected a positive number or null")
        if self.export_dtype not in EXPORT_DTYPES:
            raise ValueError(f"export_dtype={self.export_dtype}: expected one of {', '.join(EXPORT_DTYPES)}")


EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TimeBudget:
    """A wall-clock budget of ``minutes`` (``None``: unlimited) counted from construction.

    :meth:`exhausted` is called once per step by every process. Inside an initialised
    ``torch.distributed`` process group of several ranks it broadcasts rank 0's verdict (a
    one-element tensor on ``device``: CPU for gloo, the rank's GPU for NCCL), so all ranks
    stop at the same step whatever their own clocks say; otherwise, or with no budget, no
    collective is used. The verdict never touches any random state.
    """

    def __init__(self, minutes: float | None, device: torch.device = torch.device("cpu")):
        import torch.distributed as dist

        self.minutes = None if minutes is None else float(minutes)
        self.device = device
        self.start = time.perf_counter()
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def elapsed_s(self) -> float:
        """Seconds since the budget started (this process's clock)."""
        return time.perf_counter() - self.start

    def exhausted(self) -> bool:
        """Whether the budget is spent (rank 0's clock decides under ``torch.distributed``)."""
        if self.minutes is None:
            return False
        over = self.elapsed_s() >= 60.0 * self.minutes
        if not self.distributed:
            return over
        import torch.distributed as dist

        flag = torch.tensor([int(over)], dtype=torch.int32, device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_batch(images: Tensor, settings: TrainSettings, generator: torch.Generator,
                 count: int | None = None) -> Tensor:
    """Random crops (and horizontal flips) ``(count, C, crop, crop)`` of ``images`` (N, C, H, W);
    ``count`` defaults to ``settings.batch_size``."""
    n, _, h, w = images.shape
    c = min(settings.crop, h, w)
    count = settings.batch_size if count is None else count
    idx = torch.randint(n, (count,), generator=generator)
    top = torch.randint(h - c + 1, (count,), generator=generator)
    left = torch.randint(w - c + 1, (count,), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    crops = []
    for i, y0, x0, flip in zip(idx.tolist(), top.tolist(), left.tolist(), flips.tolist()):
        crop = images[i, :, y0 : y0 + c, x0 : x0 + c]
        crops.append(crop.flip(-1) if (flip and settings.hflip) else crop)
    return torch.stack(crops)


def global_batch(images: Tensor, schedule: VPSchedule, settings: TrainSettings, generator: torch.Generator,
                 world_size: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """One step's ``(z0, t, eps)`` for all ``world_size`` processes together: ``batch_size *
    world_size`` crops, training steps and noises, drawn in that order from ``generator``.
    Process ``r`` trains on rows ``[r * batch_size, (r + 1) * batch_size)``, so ``W`` processes
    of batch ``B`` see exactly the batch one process of ``W * B`` would."""
    total = settings.batch_size * world_size
    z0 = sample_batch(images, settings, generator, total)
    t = torch.randint(schedule.num_train_steps, (total,), generator=generator)
    return z0, t, torch.randn(z0.shape, generator=generator)


def dsm_loss(network: torch.nn.Module, schedule: VPSchedule, z0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """The epsilon-prediction loss on a batch ``z0`` in model space at training steps ``t`` (B,)."""
    abar = schedule.alpha_bar(t).reshape(-1, 1, 1, 1)
    z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    pred = network(z_t, t.float())[:, : z0.shape[1]]
    return torch.mean((pred - eps) ** 2)


class Trainer:
    """Trains ``card['network']`` on ``images`` (physical units) into ``out``.

    ``card`` is the model card (network, schedule, normalization, data; parsed by
    :func:`priors.card.parse_card`) that is written beside the final weights, completed with
    training facts and measured quality. ``settings`` is copied: the trainer records facts
    (``extra``) in its own :attr:`settings`, never in the caller's object.

    Data parallel: inside an initialised ``torch.distributed`` process group (``torchrun``)
    each process trains on its share of :func:`global_batch` (``batch_size`` is per process)
    through ``DistributedDataParallel``, which averages the gradients; every process keeps
    the same weights and EMA, and only rank 0 writes checkpoints. ``W`` processes of batch
    ``B`` follow the trajectory of one process of batch ``W * B`` (tested).
    """

    def __init__(self, card: Mapping[str, Any], images: Tensor, out: str | Path,
                 settings: TrainSettings, device: torch.device = torch.device("cpu")):
        import torch.distributed as dist

        self.card = dict(card)
        spec = parse_card(self.card)
        self.settings = settings = copy.deepcopy(settings)
        self.device = device
        self.out = Path(out)
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)  # the initial weights follow the seed too
            self.network = from_guided_diffusion(spec.network).to(device)
        self.model: torch.nn.Module = self.network
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.network, device_ids=[device] if device.type == "cuda" else None)
            settings.extra["processes"] = self.world_size
        self.ema = copy.deepcopy(self.network).requires_grad_(False)
        self.schedule = spec.schedule
        self.normalization = spec.normalization
        self.channels = spec.channels  # model-space channels C (the network's in_channels)
        prior = DiffusionPrior(self.network, self.schedule, self.normalization, channels=self.channels)
        self.images = prior.encode(images if images.is_complex() else images.float()).float().cpu()
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=settings.lr, weight_decay=0.0)
        self.step = 0
        self.seconds = 0.0
        self.stopped_by_budget = False  # set when the last train() call ended on the time budget

    # --- checkpoints -----------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / "train_state.pt"

    def save_state(self) -> None:
        """Write model, EMA, optimiser and counters (tensors and numbers only) atomically
        (:func:`priors.atomic.atomic_write`: fsynced, then replaced)."""
        state = {
            "network": self.network.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "seconds": self.seconds,
        }
        with atomic_write(self.state_path, "wb") as handle:
            torch.save(state, handle)

    def try_resume(self) -> bool:
        """Resume from ``out/train_state.pt`` if present; returns whether it did."""
        if not self.state_path.is_file():
            return False
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.network.load_state_dict(state["network"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])
        return True

    # --- optimisation ----------------------------------------------------------------
    def _lr(self, step: int) -> float:
        s = self.settings
        return s.lr * min(1.0, (step + 1) / max(1, s.warmup))

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.settings.ema, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.network.parameters()):
            e.lerp_(p, 1 - decay)

    def train(self, until: int | None = None, progress: Callable[[int, float], None] | None = None) -> None:
        """Run until step ``until`` (default ``settings.steps``), checkpointing on the way, or
        until ``settings.minutes`` of wall time since this call have passed (checked after each
        step: at least one step runs); then it checkpoints at the step reached and sets
        :attr:`stopped_by_budget`."""
        s = self.settings
        until = s.steps if until is None else min(until, s.steps)
        self.network.train()
        self.stopped_by_budget = False
        budget = TimeBudget(s.minutes, self.device)
        while self.step < until:
            start = time.perf_counter()
            rows = slice(self.rank * s.batch_size, (self.rank + 1) * s.batch_size)
            batch = global_batch(self.images, self.schedule, s, _step_generator(s.seed, self.step), self.world_size)
            z0, t, eps = (v[rows].to(self.device) for v in batch)
            loss = dsm_loss(self.model, self.schedule, z0, t, eps)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"training loss is {loss.item()} at step {self.step}")
            for group in self.optimizer.param_groups:
                group["lr"] = self._lr(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), s.grad_clip)
            self.optimizer.step()
            self._update_ema()
            self.step += 1
            self.seconds += time.perf_counter() - start
            if progress is not None:
                progress(self.step, loss.item())
            stop = self.step < until and budget.exhausted()
            if (self.step % s.checkpoint_every == 0 or self.step == until or stop) and self.rank == 0:
                self.save_state()
            if stop:
                self.stopped_by_budget = True
                break

    def ema_prior(self) -> DiffusionPrior:
        """The EMA network as an evaluation-mode prior."""
        return DiffusionPrior(self.ema.eval(), self.schedule, self.normalization, channels=self.channels,
                              card=self.card)

    def export(self, path: str | Path, quality: Mapping[str, Any]) -> list[Path]:
        """Write the EMA weights (as ``settings.export_dtype``) and the completed model card to
        ``path`` (.safetensors, card beside it as .yaml), or with ``settings.shard_mib`` as shards
        ``NAME-0000i-of-0000K.safetensors`` that also carry the card; returns the weight files.
        Weights of an earlier export to ``path`` in the other form (shards, or the single file)
        are removed, so that the card beside them always describes them."""
        s = self.settings
        budget: dict[str, Any] = {}
        if s.minutes is not None:
            budget["time_budget_min"] = s.minutes
        if self.stopped_by_budget:
            budget.update(stopped_by="time budget", steps_planned=s.steps)
        card = dict(self.card)
        card["training"] = {
            "steps": self.step,
            **budget,
            "batch_size": self.settings.batch_size,
            "crop": self.settings.crop,
            "lr": self.settings.lr,
            "ema": self.settings.ema,
            "seed": self.settings.seed,
            "wall_time_s": round(self.seconds, 1),
            "device": str(self.device),
            "export_dtype": s.export_dtype,
            **self.settings.extra,
        }
        card["quality"] = dict(quality)
        dtype = EXPORT_DTYPES[s.export_dtype]
        path = Path(path)
        if s.shard_mib is not None:
            files = save_sharded(path, self.ema, card, s.shard_mib, dtype)
            stale = [path] if path.suffix == ".safetensors" else []
        else:
            save_checkpoint(path, self.ema, card, dtype)
            files, stale = [path], find_shards(path)
        for old in stale:  # an earlier export's weights in the other form would not fit the new card
            old.unlink(missing_ok=True)
        return files


@torch.no_grad()
def denoising_quality(prior: DiffusionPrior, images: Tensor, timesteps: tuple[int, ...] = (50, 200, 500),
                      seed: int = 1234) -> dict[str, Any]:
    """PSNR (dB, data range = max of the images) of the noisy input and of Tweedie's
    ``x0`` at each training step ``t``, measured in physical units on ``images``."""
    from math import log10

    gen = torch.Generator().manual_seed(seed)
    images = images if images.is_complex() else images.float()
    z0 = prior.encode(images)
    peak = float(images.abs().max())
    out: dict[str, Any] = {"images": int(images.shape[0]), "data_range": peak, "psnr_db": {}}
    for t in timesteps:
        eps = torch.randn(z0.shape, generator=gen)
        abar = prior.schedule.alpha_bar(torch.tensor(t)).item()
        z_t = abar**0.5 * z0 + (1 - abar) ** 0.5 * eps
        x0 = prior.decode(prior.x0(z_t, t))
        noisy = prior.decode(z_t / abar**0.5)
        mse = lambda a: float(((a - images) .abs() ** 2).mean())  # noqa: E731
        out["psnr_db"][int(t)] = {
            "noise_std_physical": round(((1 - abar) / abar) ** 0.5 * prior.normalization.scale, 5),
            "noisy": round(10 * log10(peak**2 / mse(noisy)), 2),
            "tweedie": round(10 * log10(peak**2 / mse(x0)), 2),
        }
    return out

