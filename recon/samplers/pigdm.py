"""PiGDM, pseudoinverse-guided diffusion models (Song, Vahdat, Mardani & Kautz, ICLR 2023)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators import LinearOperator
from priors import DiffusionPrior

from .common import Callback, Sampler, ddim_update, ddpm_sigma, eps_from_x0, gaussian, initial_state, step_pairs
from .likelihood import DataTerm
from .safety import check_finite, check_measurement


class PiGDM(Sampler):
    """DDIM steps guided by the vector-Jacobian product of a pseudo-inverse correction.

    Per step ``t -> s``: ``z0 = Tweedie(z_t)`` with autograd on; the correction ``v`` that the
    measurement makes to ``z0`` if ``z0`` were exact up to Gaussian error of variance ``r_t^2 =
    1 - abar_t`` (the paper's ``r_t^2 = sigma_t^2 / (1 + sigma_t^2)`` in VP form),

        ``v = r_t^2 B^H (r_t^2 B B^H + sigma^2 I)^-1 (y - B z0)``,  ``B = A decode``

    (:meth:`~recon.samplers.likelihood.DataTerm.pseudo_inverse_step`: ``cg_iterations`` of CG
    on ``A^H A + mu I``, the Woodbury form, so no ``A A^H`` solve is needed); the guidance ``g =
    (d z0 / d z_t)^T v`` by one backward pass; then the DDIM step with ``eta`` plus ``w
    sqrt(abar_s) sqrt(abar_t) g``:

        ``z_s = sqrt(abar_s) z0 + c2 eps + c1 xi + w sqrt(abar_s) sqrt(abar_t) g``,
        ``c1 = eta sqrt((1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s))``, ``c2 = sqrt(1 - abar_s - c1^2)``.

    ``sqrt(abar_t) g`` approximates the change of the Tweedie estimate (``d z0 / d z_t`` is
    about ``1 / sqrt(abar_t)`` per pixel), so the step moves ``z0`` by about ``w v``. The last
    step returns ``decode(z0 + w sqrt(abar_t) g)``.

    Conventions and differences: the noiseless reference (NVlabs/RED-diff ``pgdm.py``) uses
    ``A^+`` (the ``sigma -> 0`` limit of ``v``); the noisy form follows the paper and
    InverseBench (which builds ``A A^T`` densely; here CG on the normal operator, fine for CT
    and MRI). ``eps`` is re-derived from the (optionally clamped) ``z0``. A nonlinear model
    needs a generalised inverse ``h^+`` that this implementation does not ask for, so it takes
    LinearOperators only. Reference defaults: 50 (RED-diff) or 100 (InverseBench) steps,
    ``eta`` 0 or 0.2, ``w = 1``.

    ``nfe = steps`` network evaluations, each with a backward pass. Called as
    ``pigdm(y, physics, generator=g) -> x``, ``(B, *in_shape)`` physical units.

    Args:
        prior: the diffusion prior.
        steps: DDIM steps over the respaced schedule.
        eta: DDIM stochasticity in ``[0, 1]``.
        w: guidance weight.
        sigma: measurement-noise std in the units of ``y`` (default: ``noise * ||A|| * scale``).
        noise: dimensionless measurement noise used when ``sigma`` is None.
        cg_iterations: CG iterations of the pseudo-inverse correction.
        operator_norm: ``||A||`` when known (skips the estimate).
        clamp: optional model-space bounds for the Tweedie estimate.
    """

    def __init__(self, prior: DiffusionPrior, steps: int = 100, eta: float = 0.2, w: float = 1.0,
                 sigma: float | None = None, noise: float = 0.05, cg_iterations: int = 10,
                 operator_norm: float | None = None, clamp: tuple[float, float] | None = None):
        if not 0.0 <= eta <= 1.0 or w < 0:
            raise ValueError(f"PiGDM needs eta in [0, 1] and w >= 0, got eta={eta}, w={w}")
        super().__init__(prior, steps)
        self.eta, self.w, self.sigma, self.noise = float(eta), float(w), sigma, float(noise)
        self.cg_iterations, self.operator_norm, self.clamp = int(cg_iterations), operator_norm, clamp

    def __call__(self, y: Tensor, physics: LinearOperator, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None, x_init: Tensor | None = None) -> Tensor:
        if not isinstance(physics, LinearOperator):
            raise TypeError(f"PiGDM needs a LinearOperator (its pseudo-inverse step uses A and A^H), got "
                            f"{type(physics).__name__}; DPS, DAPS, PnP-DM, DiffPIR and RED-Diff accept a nonlinear model")
        check_measurement(y, "PiGDM")
        prior, pairs = self.prior, step_pairs(self.prior, self.steps)
        data = DataTerm(y, physics, prior, self.sigma, self.noise, self.operator_norm, name="PiGDM")
        z = initial_state(prior, physics.in_shape, y.shape[0], pairs[0][2], generator, y.device, x_init)
        for i, (t, _, abar, abar_prev) in enumerate(pairs):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                z0 = prior.x0(z, t)
                z0 = z0 if self.clamp is None else z0.clamp(*self.clamp)
            with torch.no_grad():
                v = data.pseudo_inverse_step(z0.detach(), math.sqrt(1 - abar), self.cg_iterations)
            (g,) = torch.autograd.grad(z0, z, v)
            with torch.no_grad():
                z0, guide = z0.detach(), self.w * math.sqrt(abar) * g
                if abar_prev < 1.0:
                    noise = gaussian(z.shape, generator, z.device)
                    z = ddim_update(z0, eps_from_x0(z, z0, abar), abar_prev, self.eta * ddpm_sigma(abar, abar_prev), noise)
                    z = z + math.sqrt(abar_prev) * guide
                check_finite(z0 + guide, "PiGDM", i + 1, len(pairs),
                             f"lower w (now {self.w:g}), raise noise/sigma or set clamp")
            if callback is not None:
                callback(i, len(pairs))
        return prior.decode(data.restrict(z0 + guide))
