"""DAPS, decoupled annealing posterior sampling (Zhang et al., CVPR 2025)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from priors import DiffusionPrior

from .common import (Callback, Sampler, abar_at, ddim_update, gaussian, image_shape, initial_state, noise_level,
                     step_pairs, sub_steps)
from .likelihood import DataTerm, Physics
from .safety import check_finite, check_measurement


class DAPS(Sampler):
    """Anneal the noise; at each level solve the prior ODE to a clean estimate, then sample the data with Langevin.

    Per annealing level ``t_i`` (noisiest first, ``steps`` levels of the respaced schedule):

    1. ``z0 = ODE(z_{t_i})``: ``ode_steps`` deterministic DDIM steps from ``t_i`` to clean data
       (DDIM is the Euler method of the probability-flow ODE in the variance-exploding
       coordinates ``x = z / sqrt(abar)``, the reference's solver).
    2. ``langevin_steps`` unadjusted Langevin steps from ``z0`` on ``f(x) + ||x - z0||^2 /
       (2 r_i^2)``, ``r_i = sigma_i = sqrt((1 - abar_i) / abar_i)`` (the reference's choice of
       the Gaussian approximation of ``p(x0 | x_t)``), ``f`` the data term of
       :class:`~recon.samplers.likelihood.DataTerm`; no network calls.
    3. Re-noise to the next level: ``z = sqrt(abar_{i+1}) x0y + sqrt(1 - abar_{i+1}) xi``.

    Returns the last ``decode(x0y)``.

    Step size (a deliberate difference): the reference's Langevin step ``eta`` is absolute
    (1e-4 for SR on [-1, 1] images), so it must be re-tuned for every operator gain and noise;
    here ``eta_i = lr_i / (L^2 / sigma^2 + 1 / r_i^2)`` relative to the target's largest
    curvature (``L = ||A|| * scale``), with the reference's linear decay ``lr_i = lr (1 - (1 -
    lr_min_ratio) i / steps)``. The likelihood is ``||y - A x||^2 / (2 sigma^2)`` as in
    InverseBench; the official code's ``||y - A x||^2 / tau^2`` is ``sigma = tau / sqrt(2)``.
    Reference defaults: 200 levels (poly-7 EDM, sigma 100 -> 0.1), 5 ODE steps (1000 NFE), 100
    Langevin steps, ``tau = 0.01``.

    ``nfe`` about ``steps * ode_steps`` (forward only) plus ``steps * langevin_steps`` data-term
    gradients. Any differentiable model works (linear or not; pass ``x_init`` for a plain
    callable). Called as ``daps(y, physics, generator=g) -> x``, ``(B, *in_shape)`` physical.

    Args:
        prior: the diffusion prior.
        steps: annealing levels over the respaced schedule.
        ode_steps: DDIM (probability-flow ODE) steps per level.
        langevin_steps: Langevin steps per level.
        lr: dimensionless Langevin step at the first level (see above; stable below 2).
        lr_min_ratio: the step's final fraction of ``lr``.
        sigma: measurement-noise std in the units of ``y`` (default: ``noise * ||A|| * scale``).
        noise: dimensionless measurement noise used when ``sigma`` is None.
        operator_norm: ``||A||`` when known (skips the estimate).
    """

    def __init__(self, prior: DiffusionPrior, steps: int = 50, ode_steps: int = 5, langevin_steps: int = 50,
                 lr: float = 0.5, lr_min_ratio: float = 0.1, sigma: float | None = None, noise: float = 0.05,
                 operator_norm: float | None = None):
        if not 0 < lr < 2 or not 0 <= lr_min_ratio <= 1 or ode_steps < 1:
            raise ValueError(f"DAPS needs 0 < lr < 2, lr_min_ratio in [0, 1], ode_steps >= 1; got lr={lr}, "
                             f"lr_min_ratio={lr_min_ratio}, ode_steps={ode_steps}")
        super().__init__(prior, steps)
        self.ode_steps, self.langevin_steps = int(ode_steps), int(langevin_steps)
        self.lr, self.lr_min_ratio, self.sigma, self.noise = float(lr), float(lr_min_ratio), sigma, float(noise)
        self.operator_norm = operator_norm

    @property
    def nfe(self) -> int:
        """Network evaluations: ``ode_steps`` per annealing level (fewer at the last levels, whose
        timesteps leave room for fewer distinct ODE steps)."""
        return sum(len(sub_steps(t, self.ode_steps)) - 1 for t, *_ in step_pairs(self.prior, self.steps))

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: Physics, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None, x_init: Tensor | None = None) -> Tensor:
        check_measurement(y, "DAPS")
        prior, pairs = self.prior, step_pairs(self.prior, self.steps)
        data = DataTerm(y, physics, prior, self.sigma, self.noise, self.operator_norm, x_init, name="DAPS")
        z = initial_state(prior, image_shape(physics, x_init, "DAPS"), y.shape[0], pairs[0][2], generator,
                          y.device, x_init)
        for i, (t, _, abar, abar_prev) in enumerate(pairs):
            z0 = self._ode(z, t)
            lr = self.lr * (1 - (1 - self.lr_min_ratio) * i / len(pairs))
            x0y = data.langevin(z0, z0, noise_level(abar), self.langevin_steps, lr, generator)
            check_finite(x0y, "DAPS", i + 1, len(pairs), f"lower lr (now {self.lr:g}) or raise noise/sigma")
            if abar_prev < 1.0:
                z = math.sqrt(abar_prev) * x0y + math.sqrt(1 - abar_prev) * gaussian(z.shape, generator, z.device)
            if callback is not None:
                callback(i, len(pairs))
        return prior.decode(x0y)

    def _ode(self, z: Tensor, t: int) -> Tensor:
        """Clean estimate by ``ode_steps`` deterministic DDIM steps from ``t`` (the last targets ``abar = 1``)."""
        ts = sub_steps(t, self.ode_steps)
        for now, nxt in zip(ts, ts[1:]):
            eps = self.prior.eps(z, now)
            z = ddim_update(self.prior.x0_from_eps(z, now, eps), eps, abar_at(self.prior, nxt), 0.0, None)
        return z
