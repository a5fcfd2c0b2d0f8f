"""Batched conjugate gradient for Hermitian positive (semi-)definite systems."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .base import batch_norm2, inner


def _per_sample(scalar: Tensor, like: Tensor) -> Tensor:
    return scalar.reshape(-1, *[1] * (like.dim() - 1))


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    rhs: Tensor,
    x0: Tensor | None = None,
    *,
    iterations: int = 10,
    tol: float = 0.0,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Solve ``M x = rhs`` for every batch element independently.

    ``apply`` computes ``M x`` for a Hermitian positive semi-definite ``M`` (for example
    ``lambda x: x + gamma * A.normal(x)``). Inner products are conjugated,
    ``<u, v> = sum(conj(u) v)``, so complex data (MRI) is handled correctly; each batch
    element gets its own step sizes. Iteration stops early once every element's residual
    norm is below ``tol * ||rhs||``. An element is frozen once its residual has fallen to
    the working precision (``10 eps`` of its initial residual) or its search direction sees
    a curvature below ``100 eps`` of the largest seen: on a singular ``M`` (a low-rank
    ``A^H A``) such a direction lies in the null space up to rounding, and its step would
    blow up. Differentiable if ``apply`` is.

    ``preconditioner``: an optional Hermitian positive definite ``P ~ M^-1`` (``r -> P r``);
    preconditioned CG then minimises the same objective as CG (same solution), in fewer
    iterations where ``P M`` is better conditioned than ``M``; the floors above then apply to
    ``<r, P r>``.

    Shapes: ``rhs`` and ``x0`` are ``(B, ...)``; returns ``(B, ...)``.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0
    r = rhs - apply(x) if x0 is not None else rhs.clone()
    precondition = preconditioner if preconditioner is not None else (lambda v: v)
    z = precondition(r)
    p = z
    rs = inner(r, z).real if preconditioner is not None else batch_norm2(r)
    threshold = (tol**2) * batch_norm2(rhs)
    eps = torch.finfo(rs.dtype).eps
    floor = rs * (10 * eps) ** 2
    top = torch.zeros_like(rs)  # the largest Rayleigh quotient <p, M p> / <p, p> seen so far
    for _ in range(iterations):
        if tol > 0 and bool((batch_norm2(r) <= threshold).all()):  # the check syncs with the device: only when asked
            break
        mp = apply(p)
        curvature = inner(p, mp).real
        rayleigh = curvature / batch_norm2(p).clamp_min(torch.finfo(rs.dtype).tiny)
        top = torch.maximum(top, rayleigh)
        active = (rayleigh > 100 * eps * top) & (rs > floor)
        alpha = torch.where(active, rs / torch.where(active, curvature, torch.ones_like(curvature)), 0.0)
        x = x + _per_sample(alpha, x).to(x.dtype) * p
        r = r - _per_sample(alpha, r).to(r.dtype) * mp
        z = precondition(r)
        rs_new = inner(r, z).real if preconditioner is not None else batch_norm2(r)
        beta = torch.where(active, rs_new / torch.where(active, rs, torch.ones_like(rs)), 0.0)
        p = z + _per_sample(beta, p).to(p.dtype) * p
        rs = rs_new
    return x
