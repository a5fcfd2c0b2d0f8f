"""The measurement side of the split samplers (DiffPIR, PiGDM, DAPS, PnP-DM): the noise level, the Gaussian data prox, exact and Langevin draws from data times a Gaussian."""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import Tensor

from operators import LinearOperator, conjugate_gradient
from priors import DiffusionPrior

from .common import gaussian
from .safety import model_gain

Physics = LinearOperator | Callable[[Tensor], Tensor]


class DataTerm:
    """``f(z) = ||y - A(decode(z))||^2 / (2 sigma^2)`` over model-space images ``z``, per batch element.

    ``sigma`` is the measurement-noise std in the units of ``y`` (per real component). When the
    sampler is given none, ``sigma = noise * L`` with the dimensionless ``noise`` and the gain
    ``L = ||A|| * scale`` from model space to measurement space (``||A||`` by power iteration
    for a LinearOperator, the Jacobian's norm at the start image for a nonlinear model, or the
    ``operator_norm`` the user passes). With the reference codes' setting (images in [-1, 1],
    operators of unit gain) ``noise`` is their ``sigma_y``; with it a problem's settings carry
    over whatever the physical units and the operator's scaling.

    All methods take and return model-space tensors ``(B, C, ...)`` except where they say physical.
    """

    def __init__(self, y: Tensor, physics: Physics, prior: DiffusionPrior, sigma: float | None, noise: float,
                 operator_norm: float | None = None, x_start: Tensor | None = None, name: str = "sampler",
                 precondition: bool = False):
        self.y, self.physics, self.prior, self.precondition = y, physics, prior, precondition
        self.linear = isinstance(physics, LinearOperator)
        self.scale = float(prior.normalization.scale)
        self._norm_given, self._x_start, self.name = operator_norm, x_start, name
        if not self.linear and operator_norm is None and x_start is None:  # refused now, not at first use
            model_gain(physics, False, y.device, None, None, name)
        self.sigma = float(sigma) if sigma is not None else float(noise) * self.gain
        if not self.sigma > 0:
            raise ValueError(f"the measurement noise must be > 0 (sigma={sigma}, noise={noise}); the split samplers "
                             "weigh the data by 1 / sigma^2")
        self._aty = physics.adjoint(y) if self.linear else None
        self.support = getattr(physics, "support", None) if self.linear else None

    @functools.cached_property
    def gain(self) -> float:
        """``L = ||A|| * scale``, estimated once and only when asked (``sigma`` from ``noise``,
        Langevin steps, nonlinear data steps): the given ``operator_norm``, power iteration for a
        LinearOperator, or the Jacobian's norm at the start image for a nonlinear model."""
        norm = model_gain(self.physics, self.prior.normalization.complex_channels, self.y.device, self._x_start,
                          self._norm_given, self.name)
        return norm * self.scale

    # --- gradients (any differentiable model) -------------------------------------------------
    def grad(self, z: Tensor) -> Tensor:
        """``grad_z f(z)`` by autograd through ``decode`` and the model."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            residual = self.y - self.physics(self.prior.decode(z))
            loss = residual.abs().square().sum() / (2 * self.sigma**2)
            (grad,) = torch.autograd.grad(loss, z)
        return grad

    def langevin(self, z: Tensor, center: Tensor, r: float, steps: int, lr: float,
                 generator: torch.Generator | None) -> Tensor:
        """``steps`` unadjusted Langevin steps on ``f(z) + ||z - center||^2 / (2 r^2)`` from ``z``.

        Step ``eta = lr / (L^2 / sigma^2 + 1 / r^2)``: ``lr`` is dimensionless, the step relative
        to the target's largest curvature (ULA is stable for ``lr < 2``; its bias grows with ``lr``).
        """
        eta = lr / (self.gain**2 / self.sigma**2 + 1.0 / r**2)
        for _ in range(steps):
            drift = self.grad(z) + (z - center) / r**2
            z = z - eta * drift + math.sqrt(2 * eta) * gaussian(z.shape, generator, z.device)
        return self.restrict(z)

    def restrict(self, z: Tensor) -> Tensor:
        """``z`` with its physical image set to 0 outside the operator's ``support`` (e.g.
        :class:`operators.MultiCoilMRI` with ESPIRiT maps cropped to the object: there the data say
        nothing, and the prior would paint anatomy, as DDS did before it restricted its images)."""
        if self.support is None:
            return z
        return self.prior.encode(self.prior.decode(z) * self.support).to(z.dtype)

    # --- linear models: closed-form Gaussian steps --------------------------------------------
    def solve(self, rhs: Tensor, mu: float, start: Tensor | None, iterations: int) -> Tensor:
        """``(A^H A + mu I)^-1 rhs`` by CG (physical units), from ``start``."""
        preconditioner = getattr(self.physics, "preconditioner", None) if self.precondition else None
        return conjugate_gradient(lambda v: self.physics.normal(v) + mu * v, rhs, start, iterations=iterations,
                                  preconditioner=None if preconditioner is None else preconditioner(mu))

    def prox(self, center: Tensor, r: float, iterations: int, y: Tensor | None = None) -> Tensor:
        """``argmin_z f(z) + ||z - center||^2 / (2 r^2)`` (``y`` in place of the measurement if given).

        In physical units ``x = decode(z)``: ``(A^H A + mu I) x = A^H y + mu decode(center)`` with
        ``mu = sigma^2 / (r^2 scale^2)``, ``iterations`` of CG started at ``decode(center)``; 0
        outside the operator's ``support`` (:meth:`restrict`).
        """
        mu = self.sigma**2 / (r**2 * self.scale**2)
        x_center = self.prior.decode(center)
        aty = self._aty if y is None else self.physics.adjoint(y)
        x = self.solve(aty + mu * x_center, mu, x_center, iterations)
        if self.support is not None:
            x = x * self.support
        return self.prior.encode(x).to(center.dtype)

    def gaussian_draw(self, center: Tensor, r: float, iterations: int, generator: torch.Generator | None) -> Tensor:
        """A draw from ``exp(-f(z) - ||z - center||^2 / (2 r^2))`` by perturb-and-MAP: the prox of
        the perturbed problem ``y + sigma xi_1``, ``center + r xi_2`` (exact when CG has converged)."""
        xi = gaussian((2, *self.y.shape), generator, self.y.device)
        noise = torch.complex(xi[0], xi[1]) if self.y.is_complex() else xi[0]
        center = center + r * gaussian(center.shape, generator, center.device)
        return self.prox(center, r, iterations, y=self.y + self.sigma * noise.to(self.y.dtype))

    def pseudo_inverse_step(self, z0: Tensor, r: float, iterations: int) -> Tensor:
        """PiGDM's ``v``: the Gaussian posterior-mean correction of ``z0 ~ N(z, r^2 I)``,
        ``r^2 B^H (r^2 B B^H + sigma^2 I)^-1 (y - B z0)`` with ``B = A decode``, which equals
        ``prox(z0, r) - z0`` (Woodbury; CG on ``A^H A + mu I``)."""
        return self.prox(z0, r, iterations) - z0
