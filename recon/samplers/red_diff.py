"""RED-Diff, variational regularisation by denoising diffusion (Mardani et al., ICLR 2024)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from operators import LinearOperator, conjugate_gradient
from priors import DiffusionPrior

from .common import Callback, Sampler, gaussian
from .safety import check_finite, check_measurement


class REDDiff(Sampler):
    """Optimise a point estimate ``mu`` with Adam over a descending sweep of timesteps.

    ``mu`` lives in the prior's model space (the reference works on [-1, 1] images; so
    ``lr`` is in model-space units and the reference's values carry over). Per step ``t``
    (noisiest first; ``steps`` kept training steps, both ends of ``[0, T-1]`` included):
    fresh ``eps``, ``z_t = sqrt(abar) mu + sqrt(1 - abar) eps``, ``eps_hat = net(z_t, t)``
    without gradients, and one Adam step (betas 0.9, 0.99) on, per batch element ``b``,

        ``L_b = ||y_b - physics(decode(mu_b))||^2 / (2 sigma^2)
               + lam * w(t) * <sg(eps_hat - eps), mu_b>``,  ``w(t) = sqrt((1 - abar) / abar)``

    (``1 / sqrt(SNR)``, the reference's "linear" weighting), summed over the batch so that
    elements do not couple (Adam acts coordinate-wise). ``sigma`` is the measurement-noise
    std in the units of ``y`` (per real component).

    Mapping onto the reference code, which minimises ``lam_ref * w * mean(sg(eps_hat - eps)
    * mu) + 0.5 * mean((y - A mu)^2)`` over ``d`` image and ``m`` measurement values in
    [-1, 1] units: Adam is invariant to a positive factor on the loss (up to its epsilon),
    so it equals the loss above with ``lam = lam_ref`` and ``sigma^2 = (m / d) * scale^2``
    (``scale`` from the prior's normalisation; ``m`` counts real components). That is
    what ``sigma=None`` (the default) uses. An explicit ``sigma`` gives a properly
    normalised likelihood; it reproduces the reference with ``lam = lam_ref * (m / d) *
    scale^2 / sigma^2``, so ``lam`` must be re-tuned with it.

    Initialisation (as the reference's pseudo-inverse ``A^+ y``): ``cg_iterations`` of CG
    on ``A^H A x = A^H y`` started at ``decode(0)``, so components in the null space of
    ``A`` stay at model-space zero; or ``x_init`` (physical) when given, which a plain
    differentiable callable ``physics`` requires. Returns ``decode(mu)``,
    ``(B, *in_shape)`` in physical units. ``nfe = steps`` network evaluations (forward
    only; the data term is differentiated through ``physics`` alone). After every step a NaN
    or Inf in ``mu`` stops the run with a one-line
    :class:`~recon.samplers.safety.NonFiniteError` naming the step, ``lr``, ``lam`` and
    ``sigma``, never a NaN image.

    Reference defaults (used here): 50 steps (examples 100 to 1000), ``lam_ref`` 0.25 and
    lr 0.1 (0.1 to 0.5 by task; inpainting lr 0.25, ``lam_ref`` 1.0). The learning rate
    is constant, so the returned last iterate jitters by about ``lr`` per pixel.

    Args:
        prior: the diffusion prior.
        steps: optimisation steps, one network evaluation each.
        lr: Adam learning rate, model-space units.
        lam: weight of the diffusion regulariser.
        sigma: measurement-noise std (units of ``y``); ``None`` for the reference weighting.
        cg_iterations: CG iterations of the initial pseudo-inverse estimate.
    """

    def __init__(self, prior: DiffusionPrior, steps: int = 50, lr: float = 0.1, lam: float = 0.25,
                 sigma: float | None = None, cg_iterations: int = 10):
        if lr <= 0 or lam < 0:
            raise ValueError(f"need lr > 0 and lam >= 0, got lr={lr}, lam={lam}")
        if sigma is not None and sigma <= 0:
            raise ValueError(f"sigma must be > 0 (None for the reference weighting), got {sigma}")
        super().__init__(prior, steps)
        self.lr = float(lr)
        self.lam = float(lam)
        self.sigma = sigma
        self.cg_iterations = int(cg_iterations)

    def __call__(self, y: Tensor, physics: LinearOperator | Callable[[Tensor], Tensor], *,
                 generator: torch.Generator | None = None, callback: Callback | None = None,
                 x_init: Tensor | None = None) -> Tensor:
        prior, device = self.prior, y.device
        check_measurement(y, "RED-Diff")
        schedule = prior.schedule.respace(self.steps)
        mu = prior.encode(self._initial(y, physics, x_init)).float().detach().clone().requires_grad_(True)
        sigma = self._sigma(y, mu)
        weight = 1.0 / (2.0 * sigma**2)
        advice = (f"lower lr (now {self.lr:g}) or lam (now {self.lam:g}), or raise sigma (now {sigma:.4g}"
                  f"{', the reference weighting' if self.sigma is None else ''})")
        optimizer = torch.optim.Adam([mu], lr=self.lr, betas=(0.9, 0.99))
        timesteps = schedule.sampling_timesteps()
        for i, t in enumerate(timesteps):
            abar = float(schedule.alpha_bar(t, torch.float64))
            eps = gaussian(mu.shape, generator, device)
            with torch.no_grad():
                z_t = math.sqrt(abar) * mu + math.sqrt(1 - abar) * eps
                guide = self.lam * math.sqrt((1 - abar) / abar) * (prior.eps(z_t, t) - eps)
            with torch.enable_grad():
                residual = y - physics(prior.decode(mu))
                residual = torch.view_as_real(residual) if residual.is_complex() else residual
                loss = weight * residual.square().sum() + (guide * mu).sum()
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            check_finite(mu, "RED-Diff", i + 1, len(timesteps), advice)
            if callback is not None:
                callback(i, len(timesteps))
        return prior.decode(mu.detach())

    def _initial(self, y: Tensor, physics: LinearOperator | Callable[[Tensor], Tensor],
                 x_init: Tensor | None) -> Tensor:
        """Starting image (physical): ``x_init``, or CG on the normal equations from ``decode(0)``."""
        if x_init is not None:
            return x_init.to(device=y.device).expand(y.shape[0], *x_init.shape[1:])
        if not isinstance(physics, LinearOperator):
            raise ValueError("REDDiff needs x_init when physics is not a LinearOperator")
        with torch.no_grad():
            aty = physics.adjoint(y)
            start = self.prior.decode(torch.zeros_like(self.prior.encode(aty).float()))
            return conjugate_gradient(physics.normal, aty, start.to(aty.dtype), iterations=self.cg_iterations)

    def _sigma(self, y: Tensor, mu: Tensor) -> float:
        """``sigma``, or the reference weighting ``scale * sqrt(m / d)`` per batch element."""
        if self.sigma is not None:
            return float(self.sigma)
        m = y[0].numel() * (2 if y.is_complex() else 1)
        return self.prior.normalization.scale * math.sqrt(m / mu[0].numel())
