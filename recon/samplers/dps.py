"""DPS, Diffusion Posterior Sampling (Chung et al., ICLR 2023)."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor

from operators import LinearOperator
from priors import DiffusionPrior

from .common import Callback, Sampler, ancestral_update, gaussian, image_shape, initial_state, step_pairs
from .safety import check_finite, check_measurement, model_gain


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
    * ``L`` is estimated by power iteration: ``||A||`` for a LinearOperator; for any other
      differentiable callable ``physics(x)``, the norm of its Jacobian at the starting image
      (``x_init``, else ``decode(0)``; :func:`~recon.samplers.safety.jacobian_gain`), once per
      call. A nonlinear model's gain varies with the image: for a transmission model
      ``exp(-c A x)`` and ``x >= 0`` it is largest at ``x = 0`` (``c ||A||``; measured at the
      head phantom with ``c = 10``, 25 cm across: 0.57 of that), so ``x_init = 0`` gives the
      conservative (smaller) step. ``operator_norm`` overrides the estimate.
    * every step is checked: a NaN or Inf stops the run with a one-line
      :class:`~recon.samplers.safety.NonFiniteError` naming the step and the setting to change
      (``clamp`` when the forward model overflowed on a finite denoised estimate, as
      ``exp(-c A x)`` does on the wild early estimates of a network; else ``zeta`` /
      ``operator_norm``), never a NaN image.
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
        operator_norm: ``||A||`` (or the forward model's gain) in physical units when known
            (skips the estimate).
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
        check_measurement(y, "DPS")
        pairs = step_pairs(prior, self.steps)
        in_shape = image_shape(physics, x_init, "DPS")
        gain = self._gain(physics, device, in_shape, x_init)
        step = self.zeta / gain
        z = initial_state(prior, in_shape, y.shape[0], pairs[0][2], generator, device, x_init)
        for i, (t, _, abar, abar_prev) in enumerate(pairs):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                z0 = prior.x0(z, t)
                if self.clamp is not None:
                    z0 = z0.clamp(*self.clamp)
                residual = (y - physics(prior.decode(z0))).reshape(y.shape[0], -1)
                loss = torch.linalg.vector_norm(residual, dim=1).sum()
                (grad,) = torch.autograd.grad(loss, z)
            with torch.no_grad():  # the ancestral step re-derives eps from z0: consistent with a clamped z0
                noise = gaussian(z.shape, generator, device) if abar_prev < 1.0 else None
                z = ancestral_update(z, z0.detach(), abar, abar_prev, noise) - step * grad
            check_finite(z, "DPS", i + 1, len(pairs), partial(self._advice, z0.detach(), loss.detach(), gain))
            if callback is not None:
                callback(i, len(pairs))
        return prior.decode(z.detach())

    def _advice(self, z0: Tensor, loss: Tensor, gain: float) -> str:
        """The setting to change after a non-finite step: ``clamp`` when the forward model itself
        overflowed on a finite denoised estimate, else ``zeta`` / ``operator_norm``."""
        if bool(torch.isfinite(z0).all()) and not bool(torch.isfinite(loss)):
            return (f"the forward model gave NaN/Inf on the denoised estimate (model-space values in "
                    f"[{float(z0.min()):.3g}, {float(z0.max()):.3g}]): set clamp (now {self.clamp}), e.g. "
                    "(-1.0, 1.0), the prior's range, or make the model finite there")
        estimated = ", estimated" if self.operator_norm is None else ""
        return (f"lower zeta (now {self.zeta:g}) or pass a larger operator_norm "
                f"(now {gain / self.prior.normalization.scale:.4g}{estimated})")

    def _gain(self, physics: LinearOperator | Callable[[Tensor], Tensor], device: torch.device,
              in_shape: tuple[int, ...], x_init: Tensor | None) -> float:
        """``||J|| * scale``: the model-space-to-measurement gain that makes ``zeta`` unit-free
        (:func:`~recon.samplers.safety.model_gain`, at ``x_init`` or ``decode(0)``)."""
        prior, start = self.prior, None
        if self.operator_norm is None and not isinstance(physics, LinearOperator):
            if x_init is None:  # decode(0), the centre of the prior's range
                dtype = torch.complex64 if prior.normalization.complex_channels else torch.float32
                model = prior.encode(torch.zeros((1, *in_shape), dtype=dtype, device=device)).float()
                start = prior.decode(torch.zeros_like(model))
            else:  # x_init as the loop sees it (through float32 model space)
                start = prior.decode(prior.encode(x_init.to(device)).float())
        norm = model_gain(physics, prior.normalization.complex_channels, device, start, self.operator_norm, "DPS")
        return norm * prior.normalization.scale
