"""Pieces shared by the diffusion samplers: timesteps, start noise, the update arithmetic.

Samplers run in the prior's model space ``z`` (see :mod:`priors.prior`); forward operators
and results are in physical units. Timesteps are training-step indices of the prior's
schedule, respaced to the sampler's step count; the last step targets ``t = -1``
(``abar = 1``, clean data).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from operators import LinearOperator
from priors import DiffusionPrior

Callback = Callable[[int, int], None]


def abar_at(prior: DiffusionPrior, t: int) -> float:
    """``abar`` at training step ``t`` (``-1``: 1, clean data), as a Python float."""
    return float(prior.schedule.alpha_bar(t, torch.float64))


def step_pairs(prior: DiffusionPrior, steps: int, spacing: str = "uniform") -> list[tuple[int, int, float, float]]:
    """``(t, t_prev, abar_t, abar_prev)`` per sampling step, noisiest first (``spacing``: see
    :meth:`priors.schedule.VPSchedule.respace`)."""
    schedule = prior.schedule.respace(steps, spacing)
    return [(t, tp, float(schedule.alpha_bar(t, torch.float64)), float(schedule.alpha_bar(tp, torch.float64)))
            for t, tp in schedule.step_pairs()]


def gaussian(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal float32 noise of ``shape`` drawn from ``generator``."""
    return torch.randn(shape, generator=generator, dtype=torch.float32, device=device)


def initial_state(prior: DiffusionPrior, in_shape: tuple[int, ...], batch: int, abar: float,
                  generator: torch.Generator | None, device: torch.device, x_init: Tensor | None) -> Tensor:
    """``z_T`` of shape ``(batch, C, ...)``: pure noise, or ``x_init`` (physical) diffused to ``abar``."""
    dtype = torch.complex64 if prior.normalization.complex_channels else torch.float32
    shape = prior.encode(torch.zeros((1, *in_shape), dtype=dtype, device=device)).shape[1:]
    noise = gaussian((batch, *shape), generator, device)
    if x_init is None:
        return noise
    return math.sqrt(abar) * prior.encode(x_init.to(device)).float() + math.sqrt(1 - abar) * noise


def ddim_update(z0: Tensor, eps: Tensor, abar_prev: float, sigma: float, noise: Tensor | None) -> Tensor:
    """``z_prev = sqrt(abar_prev) z0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise``.

    With ``sigma^2`` the DDPM posterior variance and ``eps`` consistent with ``(z_t, z0)``
    this is the ancestral (DDPM) step; ``sigma = 0`` gives deterministic DDIM.
    """
    z = math.sqrt(abar_prev) * z0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
    return z if noise is None or sigma == 0 else z + sigma * noise


def ddpm_sigma(abar: float, abar_prev: float) -> float:
    """Std of the DDPM posterior ``q(z_prev | z_t, z0)`` (``beta~``, "fixed small"):
    ``sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))``; 0 at ``abar_prev = 1``."""
    return math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))


def eps_from_x0(z: Tensor, z0: Tensor, abar: float) -> Tensor:
    """The noise consistent with ``(z_t, z0)``: ``(z_t - sqrt(abar) z0) / sqrt(1 - abar)``
    (Tweedie's formula, :meth:`priors.DiffusionPrior.x0_from_eps`, solved for ``eps``)."""
    return (z - math.sqrt(abar) * z0) / math.sqrt(1 - abar)


def ancestral_update(z: Tensor, z0: Tensor, abar: float, abar_prev: float, noise: Tensor | None) -> Tensor:
    """The DDPM ancestral step ``z_t -> z_prev`` toward the estimate ``z0``: :func:`ddim_update`
    with the posterior std :func:`ddpm_sigma` and the ``eps`` consistent with ``(z_t, z0)``."""
    return ddim_update(z0, eps_from_x0(z, z0, abar), abar_prev, ddpm_sigma(abar, abar_prev), noise)


def image_shape(physics: object, x_init: Tensor | None, name: str) -> tuple[int, ...]:
    """The physical image shape (without batch): ``x_init``'s, else the operator's ``in_shape``."""
    shape = tuple(x_init.shape[1:]) if x_init is not None else getattr(physics, "in_shape", None)
    if shape is None:
        raise ValueError(f"{name} needs the image shape: pass a LinearOperator (in_shape) or x_init")
    return tuple(shape)


def noise_level(abar: float) -> float:
    """The model-space noise of ``x = z_t / sqrt(abar)`` (the variance-exploding view):
    ``sqrt((1 - abar) / abar)``; 0 at ``abar = 1``."""
    return math.sqrt((1 - abar) / abar)


def timestep_below(prior: DiffusionPrior, sigma: float) -> int:
    """The largest training step whose :func:`noise_level` is at most ``sigma`` (``-1``: none,
    ``sigma`` is below the schedule's smallest level; the last step when ``sigma`` is above all)."""
    abar = prior.schedule.train_alphas_cumprod
    levels = ((1 - abar) / abar).sqrt()
    return int((levels <= sigma).sum()) - 1


def sub_steps(t: int, count: int) -> list[int]:
    """``count`` training steps from ``t`` down to 0, evenly spaced and distinct (then ``-1``, clean)."""
    steps = sorted({round(t * (1 - k / max(count - 1, 1))) for k in range(count)}, reverse=True)
    return [*steps, -1]


class Sampler:
    """What every diffusion sampler holds: its prior and its step count, one network evaluation
    per step (per slice for volumes), so ``nfe = steps``."""

    def __init__(self, prior: DiffusionPrior, steps: int):
        self.prior = prior
        self.steps = int(steps)

    @property
    def nfe(self) -> int:
        """Network evaluations per reconstruction: one per step."""
        return self.steps


def operator_norm(physics: LinearOperator, complex_images: bool, device: torch.device) -> float:
    """``||A||_2`` by power iteration from a fixed seed (deterministic; leaves every RNG alone)."""
    generator = torch.Generator(device=device).manual_seed(0)
    dtype = torch.complex64 if complex_images else torch.float32
    return physics.norm(generator=generator, dtype=dtype, device=device)

