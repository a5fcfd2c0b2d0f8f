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
) -> Tensor:
    """Solve ``M x = rhs`` for every batch element independently.

    ``apply`` computes ``M x`` for a Hermitian positive semi-definite ``M`` (for example
    ``lambda x: x + gamma * A.normal(x)``). Inner products are conjugated,
    ``<u, v> = sum(conj(u) v)``, so complex data (MRI) is handled correctly; each batch
    element gets its own step sizes. Iteration stops early once every element's residual
    norm is below ``tol * ||rhs||``. Differentiable if ``apply`` is.

    Shapes: ``rhs`` and ``x0`` are ``(B, ...)``; returns ``(B, ...)``.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0
    r = rhs - apply(x) if x0 is not None else rhs.clone()
    p = r
    rs = batch_norm2(r)
    threshold = (tol**2) * batch_norm2(rhs)
    for _ in range(iterations):
        if bool((rs <= threshold).all()):
            break
        mp = apply(p)
        curvature = inner(p, mp).real
        active = curvature > 0
        alpha = torch.where(active, rs / torch.where(active, curvature, torch.ones_like(curvature)), 0.0)
        x = x + _per_sample(alpha, x).to(x.dtype) * p
        r = r - _per_sample(alpha, r).to(r.dtype) * mp
        rs_new = batch_norm2(r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), 0.0)
        p = r + _per_sample(beta, p).to(p.dtype) * p
        rs = rs_new
    return x
