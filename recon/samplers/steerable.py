"""Steerable Conditional Diffusion (Barbano, Denker et al. 2023): adapt the prior to the measurement while sampling.

:class:`Steerable` wraps any 2D sampler that reaches its network through ``self.prior``
(:class:`~recon.samplers.DDS`, :class:`~recon.samplers.DiffPIR`, :class:`~recon.samplers.PiGDM`,
...): for one call it adds low-rank adapters (:mod:`priors.lora`) to the prior's network and
hands the sampler a :class:`SteeredPrior`, whose noise prediction at chosen timesteps first
takes a few Adam steps of the adapters on the data-consistency loss of its own Tweedie
estimate,

    L = sum_b ||A x_b - y_b||^2 / ||y_b||^2,   x = decode(Tweedie(z_t; net + LoRA)),

optionally after ``cg_iterations`` of DDS's noisy-form CG data step from that estimate (the
reference's ``x-hat``). The adapted network then answers that step and every later one: the
prior is steered toward the measurement's distribution. The adapters are removed on return
(also on error) and start from zero on every call (a zero update: with ``steps = 0`` the
result equals the unwrapped sampler's bit for bit).

Differences from the reference (``algos/scd.py``): its DDS update re-noises with the *base*
network's ``eps``; here the sampler sees one (adapted) network for both. Its loss adds a small
TV term; here it does not. The adapters are shared by the batch, so batch elements (``samples
> 1``: posterior samples of one measurement) are coupled through them, as one adapted prior
per measurement.

Cost: each Adam step is one network forward and backward; ``nfe`` counts the sampler's
evaluations plus one per Adam step.

Args:
    sampler: the sampler to steer (its ``prior`` and ``steps`` are read).
    rank: adapter rank (:func:`priors.lora.add_lora`).
    steps: Adam steps per adapted timestep (0: no adaptation).
    lr: Adam learning rate (one optimiser for the whole run, as the reference).
    every: adapt at every ``every``-th sampling step (the first included) ...
    last: ... and at the last ``last`` steps,
    below: ... of those only the steps whose input noise ``sqrt((1 - abar_t) / abar_t)`` (model
        units, :func:`~recon.samplers.common.noise_level`) is at most ``below`` (default: all).
        Adapting the network to the data while its Tweedie estimate is still a blur of the
        noise level fits the blur, not the anatomy.
    layers: ``fnmatch`` patterns of the layers to adapt (default: residual and attention blocks).
    alpha: LoRA scaling numerator (update scaled by ``alpha / rank``; default ``rank``).
    cg_iterations: CG iterations of the data step inside the loss (0: the Tweedie estimate itself).
    gamma: the dimensionless data weight of that CG step (:class:`~recon.samplers.dds.CGDataStep`).
    seed: draws the adapters' initial ``down`` weights.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, Sequence

import torch
from torch import Tensor

from priors import DiffusionPrior
from priors.lora import lora_parameters, with_lora

from .common import noise_level, operator_norm, step_pairs
from .dds import CGDataStep


class SteeredPrior(DiffusionPrior):
    """The prior with adapters in its network; ``eps`` adapts them first at the chosen timesteps.

    Shares the network (adapters in place), schedule and normalisation of ``prior``.
    ``adapt_at``: training steps at which to adapt (each at most once). ``loss(x) -> scalar``:
    the data-consistency loss of a physical Tweedie estimate.
    """

    def __init__(self, prior: DiffusionPrior, optimizer: torch.optim.Optimizer, steps: int, adapt_at: set[int],
                 loss: Any):
        super().__init__(prior.network, prior.schedule, prior.normalization, prior.channels, prior.card)
        self.precision, self.channels_last = prior.precision, prior.channels_last
        self.optimizer, self.adapt_steps, self.adapt_at, self.loss = optimizer, int(steps), set(adapt_at), loss
        self.adapted: list[int] = []  # the timesteps adapted so far, in order
        self._losses: list[tuple[int, Tensor, Tensor]] = []  # kept on the device: no sync inside the sampling loop

    @property
    def history(self) -> list[tuple[int, float, float]]:
        """``(t, loss before, loss after the last Adam step)`` of every adapted timestep."""
        return [(t, float(first), float(last)) for t, first, last in self._losses]

    def eps(self, z_t: Tensor, t: Tensor | int) -> Tensor:
        scalar = not isinstance(t, Tensor) or t.dim() == 0
        if self.adapt_steps > 0 and scalar and int(t) in self.adapt_at and int(t) not in self.adapted:
            self.adapted.append(int(t))
            self._adapt(z_t.detach(), int(t))
        return super().eps(z_t, t)

    def _adapt(self, z: Tensor, t: int) -> None:
        """``adapt_steps`` Adam steps on the loss of the Tweedie estimate at ``(z_t, t)``."""
        losses = []
        with torch.enable_grad():
            for _ in range(self.adapt_steps):
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.loss(self.decode(self.x0_from_eps(z, t, super().eps(z, t))))
                loss.backward()
                self.optimizer.step()
                losses.append(loss.detach())
        self._losses.append((t, losses[0], losses[-1]))


class Steerable:
    """Steerable Conditional Diffusion around ``sampler`` (see the module docstring)."""

    def __init__(self, sampler: Any, rank: int = 4, steps: int = 2, lr: float = 1e-3, every: int = 10,
                 last: int = 4, layers: Sequence[str] | None = None, alpha: float | None = None,
                 cg_iterations: int = 0, gamma: float = 1.0, below: float = math.inf, seed: int = 0):
        if not isinstance(getattr(sampler, "prior", None), DiffusionPrior) or not hasattr(sampler, "steps"):
            raise TypeError(f"Steerable needs a sampler with a DiffusionPrior `prior` and `steps`, "
                            f"got {type(sampler).__name__}")
        if not below > 0:
            raise ValueError(f"adapt.below must be > 0 (a noise level in model units), got {below}")
        if steps < 0 or every < 1 or last < 0 or rank < 1 or not lr > 0 or cg_iterations < 0 or gamma < 0:
            raise ValueError(f"adapt needs rank >= 1, steps >= 0, lr > 0, every >= 1, last >= 0, "
                             f"cg_iterations >= 0, gamma >= 0; got rank={rank}, steps={steps}, lr={lr}, "
                             f"every={every}, last={last}, cg_iterations={cg_iterations}, gamma={gamma}")
        self.sampler = sampler
        self.rank, self.adapt_steps, self.lr, self.every, self.last = int(rank), int(steps), float(lr), int(every), int(last)
        self.layers = None if layers is None else [str(p) for p in layers]
        self.alpha, self.cg_iterations, self.gamma, self.seed = alpha, int(cg_iterations), float(gamma), int(seed)
        self.below = float(below)
        self.last_run: SteeredPrior | None = None  # the steered prior of the latest call (its loss history)

    @property
    def prior(self) -> DiffusionPrior:
        return self.sampler.prior

    @property
    def steps(self) -> int:
        return self.sampler.steps

    def adapt_timesteps(self) -> list[int]:
        """The training steps at which the adapters are trained, noisiest first."""
        pairs = step_pairs(self.prior, self.sampler.steps, getattr(self.sampler, "spacing", "uniform"))
        return [t for i, (t, _, abar, _) in enumerate(pairs)
                if (i % self.every == 0 or i >= len(pairs) - self.last) and noise_level(abar) <= self.below]

    @property
    def nfe(self) -> int:
        """The sampler's network evaluations plus one forward (and backward) per Adam step."""
        return int(self.sampler.nfe) + self.adapt_steps * len(self.adapt_timesteps())

    def __call__(self, y: Tensor, physics: Any, **kwargs: Any) -> Tensor:
        """Run the sampler with a prior steered toward ``y`` (keyword arguments pass through)."""
        prior = self.prior
        with with_lora(prior.network, self.rank, self.alpha, self.layers, self.seed) as params:
            optimizer = torch.optim.Adam(params, lr=self.lr)
            steered = SteeredPrior(prior, optimizer, self.adapt_steps, set(self.adapt_timesteps()),
                                   self._loss(y, physics))
            sampler = copy.copy(self.sampler)
            sampler.prior = steered
            self.last_run = steered
            try:
                return sampler(y, physics, **kwargs)
            finally:
                for p in lora_parameters(prior.network):
                    p.grad = None

    def _loss(self, y: Tensor, physics: Any):
        """``x -> sum_b ||A x_b - y_b||^2 / ||y_b||^2``, after the optional CG data step."""
        energy = y.abs().pow(2).flatten(1).sum(1).clamp_min(torch.finfo(torch.float32).tiny)
        data_step = None
        if self.cg_iterations > 0:
            norm = functools.cache(lambda: operator_norm(physics, self.prior.normalization.complex_channels, y.device))
            data_step = CGDataStep(y, physics, self.cg_iterations, norm)

        def loss(x: Tensor) -> Tensor:
            if data_step is not None:
                x = data_step(x, self.gamma if math.isfinite(self.gamma) else math.inf)
            residual = physics(x) - y
            return (residual.abs().pow(2).flatten(1).sum(1) / energy).sum()

        return loss
