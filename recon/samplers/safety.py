"""Safe defaults for samplers: the gain of a user's forward model, and a stop at the first NaN/Inf.

:func:`jacobian_gain` estimates ``||J||_2``, the spectral norm of the Jacobian of any
differentiable forward model at one image, so that a step size made dimensionless by
"the operator's gain" (DPS's ``zeta``) need not assume a gain of 1 for a nonlinear model.
:func:`check_finite` is the one-reduction-per-step check every sampler runs on its state, so
that a diverging run stops with one line naming the step and the setting to change instead
of returning NaN.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from operators import LinearOperator

from ..errors import ReconError
from .common import operator_norm

__all__ = ["NonFiniteError", "check_finite", "check_measurement", "jacobian_gain", "model_gain"]


class NonFiniteError(ReconError):
    """A sampler met NaN or Inf; the message (one line) names the sampler, the step and the
    setting to change."""


def check_finite(x: Tensor, sampler: str, step: int, total: int, advice: str | Callable[[], str]) -> None:
    """Raise :class:`NonFiniteError` unless every value of ``x`` is finite (NaN/Inf, real or complex).

    ``step`` counts from 1 (``"step 12 of 20"``); ``advice`` names the setting to change, e.g.
    ``"lower zeta (now 0.3) or pass operator_norm"``, or is a function returning it, called only
    on failure (so a diagnosis costs nothing per step). Cost: one ``torch.isfinite(x).all()``
    reduction (and, on a GPU, one synchronisation to read it).
    """
    if not bool(torch.isfinite(x).all()):
        advice = advice() if callable(advice) else advice
        line = f"{sampler}: non-finite values (NaN or Inf) at step {step} of {total}; {advice}"
        raise NonFiniteError(" ".join(line.split()))


def check_measurement(y: Tensor, sampler: str) -> None:
    """Raise :class:`NonFiniteError` when the measurement ``y`` itself holds NaN or Inf (before
    step 1, so that the per-step message does not blame a step size)."""
    if not bool(torch.isfinite(y).all()):
        raise NonFiniteError(f"{sampler}: the measurement y holds NaN or Inf ({int((~torch.isfinite(y)).sum())} "
                             f"of {y.numel()} values); replace or mask them before reconstructing")


def jacobian_gain(physics: Callable[[Tensor], Tensor], x: Tensor, *, iterations: int = 30,
                  generator: torch.Generator | None = None) -> float:
    """``||J||_2``, the largest singular value of the Jacobian of ``physics`` at ``x``.

    Units: those of ``physics(x)`` per unit of ``x`` (for a :class:`operators.LinearOperator`
    it is ``physics.norm()``, whatever ``x``). ``x`` is ``(1 or B, *in_shape)``, real or
    complex; with ``B > 1`` it is the norm of the Jacobian of the whole batch, i.e. the largest
    per-element norm when elements do not couple.

    Power iteration on ``J^H J`` from a random start (drawn from ``generator``; a fresh one
    seeded with 0 when ``None``, so the result is deterministic and no global RNG is touched),
    ``iterations`` products, the estimate ``sqrt(||J^H J v||)`` with ``||v|| = 1`` as in
    :meth:`operators.LinearOperator.norm`. ``physics`` is evaluated once; each product is two
    passes through its autograd graph:

    * ``J^H u`` is the vector-Jacobian product ``torch.autograd.grad(f, x, u)``;
    * ``J v`` is reverse-over-reverse: ``J^H u`` is linear in ``u``, so the gradient of
      ``<J^H u, v>`` with respect to a dummy ``u`` is ``J v``. This needs the backward pass to be
      differentiable, which every torch operation and the CT projectors (their backward is
      the other projector, itself a differentiable Function) are; forward-mode AD
      (``torch.func.jvp``) is not used because custom autograd Functions such as the CT
      projectors do not define a ``jvp``.

    Complex values are treated as pairs of reals (``C^n = R^2n``), which is what torch's
    complex autograd computes for a real loss: ``J`` is the real-linear Jacobian, correct
    also for non-holomorphic models (``|.|``, ``conj``), and equal to the complex matrix's
    spectral norm for a complex-linear one.

    Returns 0.0 when ``physics(x)`` does not depend on ``x``, and NaN or Inf when its
    derivative at ``x`` is not finite. Raises ``TypeError`` when the backward pass of
    ``physics`` is not differentiable (e.g. a custom Function marked ``once_differentiable``).
    """
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = physics(x)
        if not out.requires_grad:
            return 0.0  # physics(x) does not depend on x
        dummy = torch.zeros_like(out, requires_grad=True)
        (vjp_dummy,) = torch.autograd.grad(out, x, dummy, create_graph=True, materialize_grads=True)
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        v = v / torch.linalg.vector_norm(v)
        eig = 0.0
        for _ in range(iterations):
            jv = (torch.autograd.grad(vjp_dummy, dummy, v, retain_graph=True, allow_unused=True)[0]
                  if vjp_dummy.requires_grad else None)
            if jv is None:  # J^H dummy is linear in dummy, unless the backward pass is not differentiable
                raise TypeError("jacobian_gain needs a forward model whose backward pass is differentiable; "
                                "pass its gain yourself (operator_norm)")
            (w,) = torch.autograd.grad(out, x, jv.detach(), retain_graph=True)
            eig = float(torch.linalg.vector_norm(w))
            if eig == 0.0 or not math.isfinite(eig):
                break
            v = w.detach() / eig
    return eig**0.5


def model_gain(physics: Callable[[Tensor], Tensor], complex_images: bool, device: torch.device,
               start: Tensor | None, given: float | None, name: str) -> float:
    """The gain of a forward model in physical units, the one rule every sampler uses: ``given``
    (a user's ``operator_norm``) when set; ``||A||`` by power iteration for a
    :class:`operators.LinearOperator`; else the Jacobian's norm at the physical image ``start``
    (:func:`jacobian_gain`), refused with one line naming ``name`` when ``start`` is missing or
    the norm is not a positive finite number (a model flat or not differentiable there)."""
    if given is not None:
        return float(given)
    if isinstance(physics, LinearOperator):
        return operator_norm(physics, complex_images, device)
    if start is None:
        raise ValueError(f"{name}: a nonlinear forward model needs x_init (the image shape and the point where "
                         "its gain is estimated) or operator_norm")
    norm = jacobian_gain(physics, start)
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"{name}: the forward model's Jacobian at the starting image has norm {norm}; "
                         "pass operator_norm (its gain) or another x_init")
    return norm
