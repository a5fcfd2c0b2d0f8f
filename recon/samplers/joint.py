"""Joint posterior sampling of a signal and structured noise (Stevens et al., "Removing
Structured Noise with Diffusion Models", TMLR 2025).

The measurement model is ``y = A x + n + w``: ``x`` with a signal prior, ``n`` (the shape of
``y``) with its own noise prior, ``w`` white. Stacking ``u = (x, n)`` turns it into an ordinary
linear inverse problem ``y = M u + w`` with ``M = [A, I]`` and a product prior
``p(u) = p(x) p(n)``, whose diffusion is the two diffusions run side by side on a shared
schedule. :class:`JointPrior` and :class:`JointOperator` are exactly that, so every sampler
in :mod:`recon.samplers` (DPS, DDS, RED-Diff) samples the joint posterior unchanged, and
:class:`JointSampler` wraps them into ``x`` and ``n``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from operators import LinearOperator
from priors import DiffusionPrior, Normalization

from .common import Callback
from .registry import SAMPLERS

__all__ = ["JointOperator", "JointPrior", "JointSampler"]


def _model_shape(prior: DiffusionPrior, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Model-space shape ``(C, ...)`` of physical images ``(1, ...)`` under ``prior``."""
    return (prior.channels, *shape[1:])


class _JointEps(nn.Module):
    """``eps`` of the product prior on packed model-space vectors ``(B, 1, d_x + d_n)``."""

    def __init__(self, signal: DiffusionPrior, noise: DiffusionPrior, signal_shape: tuple[int, ...],
                 noise_shape: tuple[int, ...]):
        super().__init__()
        self.signal, self.noise = signal, noise
        self.signal_shape = _model_shape(signal, signal_shape)
        self.noise_shape = _model_shape(noise, noise_shape)
        self.split = math.prod(self.signal_shape)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        b = z.shape[0]
        z_x = z[:, 0, : self.split].reshape(b, *self.signal_shape)
        z_n = z[:, 0, self.split:].reshape(b, *self.noise_shape)
        eps_x, eps_n = self.signal.eps(z_x, t), self.noise.eps(z_n, t)
        return torch.cat([eps_x.reshape(b, -1), eps_n.reshape(b, -1).to(eps_x.dtype)], dim=1).unsqueeze(1)


class JointPrior(DiffusionPrior):
    """Independent signal and noise priors as one prior on packed vectors ``u`` ``(B, 1, d)``.

    ``u = [x / s_x, n / s_n]`` flattened (row-major), ``d = prod(signal_shape) + prod(noise_shape)``,
    with ``s_x``, ``s_n`` the priors' normalisation scales: each part is held in units of its
    own prior's scale, so a data-consistency step that weighs ``||u - u0||`` (DDS's CG) treats
    both parts alike whatever their physical units. Pair it with :class:`JointOperator`.
    Both priors must be real-valued and share one noise schedule (the joint diffusion runs
    both at the same ``t``).

    ``noise_weight`` ``w`` holds the noise in units of ``w s_n`` instead: a metric on ``u``
    (DDS's CG, RED-Diff's Adam) then moves the noise part ``w`` times as readily, so a data
    residual is split ``s_x^2 : (w s_n)^2`` between signal and noise by a least-squares step.
    DPS's gradient is taken in model space and does not depend on it.

    Args:
        signal: the signal prior (physical images ``signal_shape`` = ``(1, H, W)``).
        noise: the noise prior (physical noise ``noise_shape``, the shape of one measurement).
        noise_weight: ``w`` above (default 1).
    """

    def __init__(self, signal: DiffusionPrior, noise: DiffusionPrior, signal_shape: tuple[int, ...],
                 noise_shape: tuple[int, ...], noise_weight: float = 1.0):
        if noise_weight <= 0:
            raise ValueError(f"noise_weight must be > 0, got {noise_weight}")
        grid = getattr(noise, "shape", None)  # analytic priors hold a fixed grid
        if grid is not None and tuple(grid) != tuple(noise_shape):
            raise ValueError(f"the noise prior is defined on {tuple(grid)}, but the measurement is {tuple(noise_shape)} "
                             "(refit it on the measurement's grid, e.g. task.noise_shape=[...])")
        self.noise_weight = float(noise_weight)
        if signal.normalization.complex_channels or noise.normalization.complex_channels:
            raise ValueError("JointPrior needs real-valued signal and noise priors")
        a, b = signal.schedule, noise.schedule
        if len(a.train_alphas_cumprod) != len(b.train_alphas_cumprod) or not torch.allclose(
                a.train_alphas_cumprod, b.train_alphas_cumprod):
            raise ValueError("the signal and noise priors must share one noise schedule (same T and alpha_bar)")
        self.signal_shape, self.noise_shape = tuple(signal_shape), tuple(noise_shape)
        super().__init__(_JointEps(signal, noise, self.signal_shape, self.noise_shape), signal.schedule,
                         Normalization(), channels=1)

    @property
    def parts(self) -> tuple[DiffusionPrior, DiffusionPrior]:
        """The signal and noise priors."""
        return self.network.signal, self.network.noise

    @property
    def scales(self) -> tuple[float, float]:
        """``(s_x, w s_n)``: physical units per packed unit of each part."""
        signal, noise = self.parts
        return signal.normalization.scale, self.noise_weight * noise.normalization.scale

    def split(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Packed ``u`` ``(B, 1, d)`` -> physical ``x`` ``(B, *signal_shape)``, ``n`` ``(B, *noise_shape)``."""
        s_x, s_n = self.scales
        cut = math.prod(self.signal_shape)
        return (s_x * u[:, 0, :cut].reshape(-1, *self.signal_shape),
                s_n * u[:, 0, cut:].reshape(-1, *self.noise_shape))

    def pack(self, x: Tensor, n: Tensor) -> Tensor:
        """Physical ``x`` and ``n`` -> packed ``u`` ``(B, 1, d)``."""
        s_x, s_n = self.scales
        return torch.cat([x.reshape(x.shape[0], -1) / s_x, n.reshape(n.shape[0], -1) / s_n], dim=1).unsqueeze(1)

    def encode(self, u: Tensor) -> Tensor:
        signal, noise = self.parts
        x, n = self.split(u)
        b = u.shape[0]
        return torch.cat([signal.encode(x).reshape(b, -1), noise.encode(n).reshape(b, -1)], dim=1).unsqueeze(1)

    def decode(self, z: Tensor) -> Tensor:
        signal, noise = self.parts
        net = self.network
        b = z.shape[0]
        x = signal.decode(z[:, 0, : net.split].reshape(b, *net.signal_shape))
        n = noise.decode(z[:, 0, net.split:].reshape(b, *net.noise_shape))
        return self.pack(x, n)


class JointOperator(LinearOperator):
    """``M u = A(s_x u_x) + s_n u_n`` on packed ``u`` ``(B, 1, d)`` (see :class:`JointPrior`).

    ``physics`` is the signal's forward model ``A`` (real); the noise has its output shape.
    The adjoint is ``M^T r = [s_x A^T r, s_n r]``.
    """

    def __init__(self, physics: LinearOperator, prior: JointPrior):
        if tuple(physics.in_shape) != prior.signal_shape or tuple(physics.out_shape) != prior.noise_shape:
            raise ValueError(f"JointOperator: operator maps {physics.in_shape} -> {physics.out_shape}, but the joint "
                             f"prior holds signals {prior.signal_shape} and noise {prior.noise_shape}")
        super().__init__((1, math.prod(prior.signal_shape) + math.prod(prior.noise_shape)), physics.out_shape)
        self.physics = physics
        self.prior = prior

    def forward(self, u: Tensor) -> Tensor:
        x, n = self.prior.split(u)
        return self.physics(x) + n

    def adjoint(self, r: Tensor) -> Tensor:
        s_x, s_n = self.prior.scales
        b = r.shape[0]
        return torch.cat([s_x * self.physics.adjoint(r).reshape(b, -1), s_n * r.reshape(b, -1)], dim=1).unsqueeze(1)


class JointSampler:
    """Sample ``(x, n)`` from ``p(x, n | y)`` with ``y = A x + n + w``; returns ``x``.

    Runs a sampler of :data:`recon.samplers.SAMPLERS` on :class:`JointPrior` and
    :class:`JointOperator`: each step denoises ``x`` with the signal prior and ``n`` with the
    noise prior at the same ``t``, and the data term ``||y - A x0 - n0||`` couples them. Step
    sizes are the wrapped sampler's, dimensionless as there:

    * ``dds`` (used by the tasks): the CG data step starts at both Tweedie estimates and
      splits the residual between signal and noise ``s_x^2 : (w s_n)^2`` (``w`` =
      ``noise_weight``); the next step's denoisers keep of each part what its prior finds
      plausible, so the structured residual accumulates in ``n`` and the rest in ``x``.
    * ``dps`` (the reference method's guidance): one gradient of the residual norm through
      both networks; ``zeta`` is divided by ``||M||``, which combines ``s_x ||A||`` and
      ``w s_n``, so the reference's separate steps for ``x`` and ``n`` become one step in
      units of each prior's scale.

    ``__call__`` returns ``x`` ``(B, *physics.in_shape)`` like every sampler; :meth:`separate`
    returns ``(x, n)``. ``nfe`` counts steps; each step evaluates both priors.

    Args:
        prior: the signal prior.
        noise_prior: the structured-noise prior; its physical shape is the measurement's.
        sampler: ``dds`` | ``dps`` | ``red_diff``.
        signal_clamp: optional ``(low, high)`` model-space bounds for the signal part alone
            (DDS and DPS's ``clamp``; the noise is left unbounded).
        noise_weight: ``w``, how readily a data step moves the noise part (:class:`JointPrior`).
        **settings: the sampler's own settings (``steps``, ``zeta``, ``gamma``, ...).
    """

    def __init__(self, prior: DiffusionPrior, noise_prior: DiffusionPrior, sampler: str = "dds",
                 signal_clamp: tuple[float, float] | None = None, noise_weight: float = 1.0, **settings: Any):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown joint sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
        if signal_clamp is not None and sampler == "red_diff":
            raise ValueError("signal_clamp applies to the dds and dps joint samplers, not red_diff")
        if "clamp" in settings:
            raise ValueError("JointSampler: use signal_clamp (a clamp on the packed vector would bound the noise too)")
        self.prior, self.noise_prior, self.noise_weight = prior, noise_prior, float(noise_weight)
        self.signal_clamp = None if signal_clamp is None else (float(signal_clamp[0]), float(signal_clamp[1]))
        self.sampler_cls, self.settings = SAMPLERS[sampler], dict(settings)
        self.nfe = int(self.sampler_cls(prior, **self.settings).nfe)

    def separate(self, y: Tensor, physics: LinearOperator, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None, x_init: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x, n)``: the signal ``(B, *physics.in_shape)`` and the structured noise ``(B, *y.shape[1:])``."""
        if not isinstance(physics, LinearOperator) or y.is_complex():
            raise TypeError("JointSampler needs a real LinearOperator A (the joint operator is [A, I])")
        joint = JointPrior(self.prior, self.noise_prior, physics.in_shape, physics.out_shape,
                           self.noise_weight).to(y.device)
        operator = JointOperator(physics, joint)
        u_init = None
        if x_init is not None:
            x_init = x_init.to(y.device).expand(y.shape[0], *physics.in_shape)
            u_init = joint.pack(x_init, torch.zeros_like(y))
        settings = dict(self.settings)
        if self.signal_clamp is not None:
            cut, d = math.prod(joint.signal_shape), operator.in_shape[1]
            low, high = torch.full((d,), -math.inf, device=y.device), torch.full((d,), math.inf, device=y.device)
            low[:cut], high[:cut] = self.signal_clamp
            settings["clamp"] = (low, high)
        sampler = self.sampler_cls(joint, **settings)
        u = sampler(y, operator, generator=generator, callback=callback, x_init=u_init)
        return joint.split(u)

    def __call__(self, y: Tensor, physics: LinearOperator, **kwargs: Any) -> Tensor:
        return self.separate(y, physics, **kwargs)[0]
