"""``reconstruct``: one call from a measurement, a forward model and a prior to an image."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from operators import LinearOperator
from priors import DiffusionPrior, load_prior

from .samplers import SAMPLERS

__all__ = ["SAMPLERS", "reconstruct"]


def reconstruct(y: Tensor, physics: LinearOperator | Callable[[Tensor], Tensor],
                prior: DiffusionPrior | str | Path, sampler: str = "dds", *,
                generator: torch.Generator | None = None, x_init: Tensor | None = None,
                callback: Callable[[int, int], None] | None = None, adapt: dict[str, Any] | None = None,
                **settings: Any) -> Tensor:
    """Reconstruct ``(B, *in_shape)`` physical images from measurements ``y`` ``(B, ...)``.

    Args:
        y: measurements, any batch size, on the device to compute on.
        physics: a :class:`operators.LinearOperator` (your own subclass included), or for
            ``dps``, ``red_diff``, ``daps``, ``pnp_dm`` and ``diffpir`` any differentiable
            function ``x -> y`` (a nonlinear forward model; pass ``x_init``, which gives the
            image shape). They estimate such a model's gain from its Jacobian at ``x_init``
            (``operator_norm`` overrides it); a model that can overflow (``exp(-c A x)``) also
            wants ``clamp=(-1.0, 1.0)`` with DPS. ``dds`` and ``pigdm`` solve with ``A`` and
            ``A^H``, so they need a LinearOperator.
        prior: a :class:`priors.DiffusionPrior`, or a bundled prior's name or a checkpoint path
            (:func:`priors.load_prior`); it is moved to ``y``'s device.
        sampler: ``dds`` | ``dps`` | ``red_diff`` | ``daps`` | ``pnp_dm`` | ``diffpir`` |
            ``pigdm`` (:data:`SAMPLERS`).
        generator: the source of all randomness (same seed, same result).
        x_init: optional physical starting image ``(1 or B, *in_shape)``.
        callback: ``callback(step, total)`` after every step (progress bars).
        adapt: Steerable Conditional Diffusion settings (``rank``, ``steps``, ``lr``, ``every``, ...:
            :class:`recon.samplers.Steerable`): adapt the prior to ``y`` while sampling. None: off.
        **settings: the sampler's own arguments (``steps``, ``gamma``, ``zeta``, ``lr``, ...).

    No global state is read or written; nothing is configured through Hydra. Every sampler
    checks every step: one that meets NaN or Inf stops with a one-line
    :class:`recon.samplers.safety.NonFiniteError` (a :class:`recon.errors.ReconError`)
    naming the step and the setting to change; it never returns a NaN image.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    if sampler == "dds" and not isinstance(physics, LinearOperator):
        raise TypeError("sampler='dds' needs a LinearOperator (its data step solves (I + g A^H A) x = ... "
                        "with A and A^H); use sampler='dps' or 'red_diff' for a nonlinear forward model")
    if not isinstance(prior, DiffusionPrior):
        prior = load_prior(prior)
    method = SAMPLERS[sampler](prior.to(y.device), **settings)
    if adapt is not None:
        from .samplers import Steerable

        method = Steerable(method, **adapt)
    return method(y, physics, generator=generator, x_init=x_init, callback=callback)
