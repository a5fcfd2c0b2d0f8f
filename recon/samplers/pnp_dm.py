"""PnP-DM, plug-and-play split Gibbs sampling with a diffusion prior (Wu, Sun, Chen, Zhang, Yue & Bouman, NeurIPS 2024)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from priors import DiffusionPrior

from .common import (Callback, Sampler, abar_at, ancestral_update, gaussian, image_shape, sub_steps,
                     timestep_below)
from .likelihood import DataTerm, Physics
from .safety import check_finite, check_measurement


class PnPDM(Sampler):
    """Alternate a likelihood draw and a prior draw, coupled by ``||x - z||^2 / (2 rho_k^2)`` with ``rho_k`` annealed.

    Iteration ``k`` (``rho_k = max(rho0 decay^k, rho_min)``, model-space units):

    1. likelihood step: ``z ~ exp(-f(z) - ||z - x||^2 / (2 rho_k^2))`` with ``f`` the data term
       of :class:`~recon.samplers.likelihood.DataTerm`: an exact Gaussian draw for a
       LinearOperator (perturb-and-MAP: ``cg_iterations`` of CG on the perturbed prox; the
       reference uses an SVD or FFT), ``langevin_steps`` Langevin steps otherwise (as the
       reference's nonlinear tasks; step relative to the curvature, see ``DataTerm.langevin``);
    2. prior step: ``x ~ p(x0 | x_rho = z)``, the denoising posterior at noise ``rho_k``: ``z``
       is the variance-exploding state at the largest training step whose noise level
       ``sqrt((1 - abar) / abar)`` is at most ``rho_k``, scaled to ``sqrt(abar) z``, then
       ``denoise_steps`` ancestral (reverse-SDE) steps to clean data (the reference's SDE
       sampler, on its own grid).

    Returns the last ``decode(x)`` (the reference also reports a running mean of late draws).
    Reference defaults (``configs/sampler/pnp_edm.yaml``): 100 iterations, ``rho0 = 10``,
    ``decay = 0.9``, ``rho_min`` 0.3 (blur, SR) or 0.1; with a 100-point grid below ``rho_k``.
    The target is the posterior smoothed at ``rho_min``: smaller ``rho_min`` samples closer to
    the posterior but mixes more slowly.

    ``nfe`` = the network evaluations of the prior steps (``denoise_steps`` per iteration,
    fewer once ``rho_k`` falls below the schedule's smallest noise levels). Called as
    ``pnp_dm(y, physics, generator=g) -> x``, ``(B, *in_shape)`` physical units; ``x_init``
    (physical) is the first ``x`` (default: model-space zero).

    Args:
        prior: the diffusion prior.
        iterations: Gibbs iterations.
        rho0, decay, rho_min: the coupling schedule (model-space units).
        denoise_steps: ancestral steps of each prior draw.
        sigma: measurement-noise std in the units of ``y`` (default: ``noise * ||A|| * scale``).
        noise: dimensionless measurement noise used when ``sigma`` is None.
        cg_iterations: CG iterations of the Gaussian draw (linear models).
        langevin_steps, lr: Langevin likelihood steps (nonlinear models).
        operator_norm: ``||A||`` when known (skips the estimate).
    """

    def __init__(self, prior: DiffusionPrior, iterations: int = 50, rho0: float = 10.0, decay: float = 0.9,
                 rho_min: float = 0.1, denoise_steps: int = 10, sigma: float | None = None, noise: float = 0.05,
                 cg_iterations: int = 20, langevin_steps: int = 50, lr: float = 0.5,
                 operator_norm: float | None = None):
        if not (rho0 >= rho_min > 0 and 0 < decay <= 1 and denoise_steps >= 1):
            raise ValueError(f"PnP-DM needs rho0 >= rho_min > 0, decay in (0, 1], denoise_steps >= 1; got "
                             f"rho0={rho0}, rho_min={rho_min}, decay={decay}, denoise_steps={denoise_steps}")
        super().__init__(prior, iterations)
        self.rho0, self.decay, self.rho_min = float(rho0), float(decay), float(rho_min)
        self.denoise_steps = int(denoise_steps)
        self.sigma, self.noise, self.cg_iterations = sigma, float(noise), int(cg_iterations)
        self.langevin_steps, self.lr, self.operator_norm = int(langevin_steps), float(lr), operator_norm

    def rhos(self) -> list[float]:
        """The coupling ``rho_k`` of every iteration."""
        return [max(self.rho0 * self.decay**k, self.rho_min) for k in range(self.steps)]

    @property
    def nfe(self) -> int:
        """Network evaluations over all prior steps."""
        starts = (timestep_below(self.prior, rho) for rho in self.rhos())
        return sum(len(sub_steps(t, self.denoise_steps)) - 1 for t in starts if t >= 0)

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: Physics, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None, x_init: Tensor | None = None) -> Tensor:
        check_measurement(y, "PnP-DM")
        prior = self.prior
        data = DataTerm(y, physics, prior, self.sigma, self.noise, self.operator_norm, x_init, name="PnP-DM")
        shape = prior.encode(torch.zeros((1, *image_shape(physics, x_init, "PnP-DM")), device=y.device,
                                         dtype=torch.complex64 if prior.normalization.complex_channels else torch.float32)).shape
        x = torch.zeros((y.shape[0], *shape[1:]), device=y.device) if x_init is None else \
            prior.encode(x_init.to(y.device)).float().expand(y.shape[0], *shape[1:]).clone()
        rhos = self.rhos()
        for k, rho in enumerate(rhos):
            if data.linear:
                z = data.gaussian_draw(x, rho, self.cg_iterations, generator)
            else:
                z = data.langevin(x, x, rho, self.langevin_steps, self.lr, generator)
            x = self._denoise(z, rho, generator)
            check_finite(x, "PnP-DM", k + 1, len(rhos), f"raise noise/sigma or cg_iterations (now {self.cg_iterations}); "
                         f"for a nonlinear model lower lr (now {self.lr:g})")
            if callback is not None:
                callback(k, len(rhos))
        return prior.decode(data.restrict(x))

    def _denoise(self, z: Tensor, rho: float, generator: torch.Generator | None) -> Tensor:
        """A draw of ``p(x0 | x_rho = z)``: ancestral steps from the largest training step with noise <= ``rho``."""
        t = timestep_below(self.prior, rho)
        if t < 0:  # below the schedule's smallest noise: z is already clean to the prior's resolution
            return z
        ts = sub_steps(t, self.denoise_steps)
        z = math.sqrt(abar_at(self.prior, t)) * z
        for now, nxt in zip(ts, ts[1:]):
            z0 = self.prior.x0(z, now)
            noise = gaussian(z.shape, generator, z.device) if nxt >= 0 else None
            z = ancestral_update(z, z0, abar_at(self.prior, now), abar_at(self.prior, nxt), noise)
        return z
