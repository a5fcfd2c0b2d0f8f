"""DiffPIR, denoising diffusion models for plug-and-play image restoration (Zhu et al., CVPR 2023 workshops)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from priors import DiffusionPrior

from .common import (Callback, Sampler, ddim_update, eps_from_x0, gaussian, image_shape, initial_state, noise_level,
                     step_pairs)
from .likelihood import DataTerm, Physics
from .safety import check_finite, check_measurement


class DiffPIR(Sampler):
    """Half-quadratic splitting: per step, denoise (Tweedie), solve the data subproblem, re-noise.

    Per step ``t`` (no gradients through the network): ``z0 = Tweedie(z_t)``; the data
    subproblem ``z0' = argmin_z f(z) + ||z - z0||^2 / (2 r_t^2)`` with ``f`` the data term of
    :class:`~recon.samplers.likelihood.DataTerm` and ``r_t = sigma_bar_t / sqrt(lam)``,
    ``sigma_bar_t = sqrt((1 - abar_t) / abar_t)``; then ``eps' = (z_t - sqrt(abar_t) z0') /
    sqrt(1 - abar_t)`` and ``z_prev = sqrt(abar_prev) z0' + sqrt(1 - abar_prev) (sqrt(1 - zeta)
    eps' + sqrt(zeta) xi)``. The last step returns ``decode(z0')``.

    Mapping onto the reference code (``main_ddpir_*.py``): its ``rho_t = lam sigma_n^2 /
    sigma_bar_t^2`` weighs ``||x - x0||^2`` against ``||y - A x||^2``; dividing by ``2
    sigma_n^2`` gives the prox above with ``r_t^2 = sigma_bar_t^2 / lam`` and ``sigma =
    sigma_n``. Differences: the data subproblem is solved by ``cg_iterations`` of CG on
    ``(A^H A + mu I) x = A^H y + mu x0`` (the reference uses FFT closed forms for blur and SR,
    which CT and MRI do not have); a nonlinear model takes one damped gradient step ``z0 -
    grad f(z0) / (L^2 / sigma^2 + 1 / r_t^2)`` (InverseBench takes ``z0 - r_t^2 grad f(z0)``,
    which diverges where ``r_t L / sigma`` is large); the start is noise (or ``x_init``
    diffused), not the noised measurement, which is not an image for CT or MRI; the timesteps
    are evenly respaced unless ``spacing="quad"`` (the reference's: half the spacing near clean
    data, coarser at the noisy end); no clipping unless ``clamp`` is set. Reference defaults:
    100 quad steps, ``lam = 1``, ``sigma_n = 0.05`` on [0, 1] images (``noise = 0.1`` here on
    [-1, 1]), ``zeta`` 0.1 (deblur) to 0.25 (SR), 1 for inpainting.

    ``sigma`` / ``noise``: the measurement noise (see DataTerm). ``nfe = steps`` (forward only).
    Called as ``diffpir(y, physics, generator=g) -> x``, ``(B, *in_shape)`` physical units;
    ``x_init`` (physical) is diffused to the first step instead of pure noise.

    Args:
        prior: the diffusion prior.
        steps: sampling steps over the respaced schedule.
        lam: the reference's regularisation weight ``lambda`` (larger: trust the prior more).
        zeta: fraction of fresh noise in the re-noising, in ``[0, 1]``.
        sigma: measurement-noise std in the units of ``y`` (default: ``noise * ||A|| * scale``).
        noise: dimensionless measurement noise used when ``sigma`` is None.
        cg_iterations: CG iterations of the data subproblem (linear models).
        operator_norm: ``||A||`` when known (skips the estimate).
        clamp: optional model-space bounds for the Tweedie and data-consistent estimates.
        precondition: precondition the data subproblem's CG with the operator's
            ``preconditioner(mu)`` where it has one (:class:`operators.NonCartesianMRI`): the same
            solution in fewer iterations.
        spacing: ``uniform`` or ``quad`` timesteps (:meth:`priors.schedule.VPSchedule.respace`).
    """

    def __init__(self, prior: DiffusionPrior, steps: int = 100, lam: float = 1.0, zeta: float = 0.3,
                 sigma: float | None = None, noise: float = 0.1, cg_iterations: int = 10,
                 operator_norm: float | None = None, clamp: tuple[float, float] | None = None,
                 precondition: bool = False, spacing: str = "uniform"):
        if not 0.0 <= zeta <= 1.0 or not lam > 0:
            raise ValueError(f"DiffPIR needs zeta in [0, 1] and lam > 0, got zeta={zeta}, lam={lam}")
        super().__init__(prior, steps)
        self.lam, self.zeta, self.sigma, self.noise = float(lam), float(zeta), sigma, float(noise)
        self.cg_iterations, self.operator_norm, self.clamp = int(cg_iterations), operator_norm, clamp
        self.precondition, self.spacing = bool(precondition), str(spacing)
        step_pairs(prior, steps, self.spacing)  # a bad spacing or step count fails here, not mid-run

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: Physics, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None, x_init: Tensor | None = None) -> Tensor:
        check_measurement(y, "DiffPIR")
        prior, pairs = self.prior, step_pairs(self.prior, self.steps, self.spacing)
        data = DataTerm(y, physics, prior, self.sigma, self.noise, self.operator_norm, x_init, name="DiffPIR",
                        precondition=self.precondition)
        z = initial_state(prior, image_shape(physics, x_init, "DiffPIR"), y.shape[0], pairs[0][2], generator,
                          y.device, x_init)
        for i, (t, _, abar, abar_prev) in enumerate(pairs):
            z0 = self._project(prior.x0(z, t))
            z0 = self._project(self._data_step(data, z0, noise_level(abar) / math.sqrt(self.lam)))
            check_finite(z0, "DiffPIR", i + 1, len(pairs), f"raise lam (now {self.lam:g}) or noise/sigma, or set clamp")
            if abar_prev < 1.0:
                sigma = math.sqrt(self.zeta * (1 - abar_prev))
                z = ddim_update(z0, eps_from_x0(z, z0, abar), abar_prev, sigma, gaussian(z.shape, generator, z.device))
            if callback is not None:
                callback(i, len(pairs))
        return prior.decode(z0)

    def _data_step(self, data: DataTerm, z0: Tensor, r: float) -> Tensor:
        """``argmin f(z) + ||z - z0||^2 / (2 r^2)``: CG for a linear model, one damped gradient step otherwise."""
        if data.linear:
            return data.prox(z0, r, self.cg_iterations)
        return z0 - data.grad(z0) / (data.gain**2 / data.sigma**2 + 1.0 / r**2)

    def _project(self, z: Tensor) -> Tensor:
        return z if self.clamp is None else z.clamp(*self.clamp)
