"""DPS, Diffusion Posterior Sampling (Chung et al., ICLR 2023)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from operators import LinearOperator
from priors import DiffusionPrior

from .common import Callback, Sampler, ancestral_update, gaussian, initial_state, operator_norm, step_pairs


class DPS(Sampler):
    """Ancestral VP sampling with a measurement-gradient step through the network.

    Per step: ``eps = net(z_t, t)`` with autograd on, ``z0 = Tweedie(z_t, eps)`` (clamped
    to ``clamp`` if given), the DDPM ancestral proposal ``z'`` from ``(z_t, z0)`` with the
    posterior variance ``beta~`` (fixed small), the residual norm
    ``r_b = ||y_b - physics(decode(z0_b))||_2`` per batch element, and
    ``z_prev = z' - zeta / L * grad_{z_t} sum_b r_b``. Conventions:

    * plain, not squared, norm, as in the reference code (equal, up to a factor 2, to the
      paper's step ``zeta / ||r||`` on the squared norm). It is taken per batch element and
      summed, so elements do not couple (the reference takes one norm over the batch).
    * ``zeta`` is dimensionless: ``L = ||A||_2 * normalization.scale`` is the gain from
      model space to measurement space, so the step does not depend on the physical units
      or the operator's scaling. With ``L = 1`` (the reference setting: data in [-1, 1],
      operators of unit gain) this is the reference code's step; it ships 0.3 (deblurring,
      ``||A|| = 1``; the default here) to 1.0 for 256x256 RGB images. The normalised
      gradient has norm ``<= ||d z0 / d z_t||`` whatever the image size, so the step is
      relatively larger on small images: they need smaller ``zeta``.
    * ``L`` is estimated by power iteration for a LinearOperator; for any other
      differentiable callable ``physics(x)`` pass ``operator_norm`` (default 1).
    * ``clamp``: optional ``(low, high)`` bounds on ``z0`` in model space (the reference
      clamps to [-1, 1]); default off.

    Called as ``dps(y, physics, generator=g) -> x`` with ``y`` ``(B, ...)``; returns
    ``(B, *physics.in_shape)`` in physical units. ``x_init`` (physical, optional) is
    diffused to the first timestep instead of starting from pure noise; it also gives the
    image shape when ``physics`` is a plain callable.
    ``nfe = steps`` network evaluations, each followed by one backward pass through the
    network (roughly three forward passes of compute per step).

    Args:
        prior: the diffusion prior.
        steps: ancestral steps over the respaced schedule.
        zeta: dimensionless step size of the measurement gradient (see above).
        clamp: optional model-space bounds for ``z0`` (numbers, or broadcastable tensors).
        operator_norm: ``||A||`` in physical units when known (skips the estimate).
    """

    def __init__(self, prior: DiffusionPrior, steps: int = 1000, zeta: float = 0.3,
                 clamp: tuple[float | Tensor, float | Tensor] | None = None, operator_norm: float | None = None):
        if zeta < 0:
            raise ValueError(f"zeta must be >= 0, got {zeta}")
        super().__init__(prior, steps)
        self.zeta = float(zeta)
        self.clamp = clamp
        self.operator_norm = operator_norm

    def __call__(self, y: Tensor, physics: LinearOperator | Callable[[Tensor], Tensor], *,
                 generator: torch.Generator | None = None, callback: Callback | None = None,
                 x_init: Tensor | None = None) -> Tensor:
        prior, device = self.prior, y.device
        pairs = step_pairs(prior, self.steps)
        step = self.zeta / self._gain(physics, device)
        in_shape = getattr(physics, "in_shape", None) if x_init is None else tuple(x_init.shape[1:])
        if in_shape is None:
            raise ValueError("DPS needs the image shape: pass a LinearOperator (in_shape) or x_init")
        z = initial_state(prior, in_shape, y.shape[0], pairs[0][2], generator, device, x_init)
        for i, (t, _, abar, abar_prev) in enumerate(pairs):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                z0 = prior.x0(z, t)
                if self.clamp is not None:
                    z0 = z0.clamp(*self.clamp)
                residual = (y - physics(prior.decode(z0))).reshape(y.shape[0], -1)
                (grad,) = torch.autograd.grad(torch.linalg.vector_norm(residual, dim=1).sum(), z)
            with torch.no_grad():  # the ancestral step re-derives eps from z0: consistent with a clamped z0
                noise = gaussian(z.shape, generator, device) if abar_prev < 1.0 else None
                z = ancestral_update(z, z0.detach(), abar, abar_prev, noise) - step * grad
            if callback is not None:
                callback(i, len(pairs))
        return prior.decode(z.detach())

    def _gain(self, physics: LinearOperator | Callable[[Tensor], Tensor], device: torch.device) -> float:
        """``||A|| * scale``: the model-space-to-measurement gain that makes ``zeta`` unit-free."""
        norm = self.operator_norm
        if norm is None:
            norm = (operator_norm(physics, self.prior.normalization.complex_channels, device)
                    if isinstance(physics, LinearOperator) else 1.0)
        return norm * self.prior.normalization.scale
