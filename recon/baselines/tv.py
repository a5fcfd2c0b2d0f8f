"""Total-variation regularised least squares, solved with PDHG (Chambolle–Pock).

    min_x  0.5 ||A x - y||^2 + weight * TV(x)   subject to  x >= 0 (optional)

TV is the isotropic total variation with forward differences (Neumann boundary). The
gradient block is rescaled internally so that both blocks of ``K = [A; c grad]`` have
comparable norms, which keeps the step sizes ``tau = sigma = 0.99 / ||K||`` efficient
for any operator scaling; ``weight`` keeps its meaning in the objective above.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators import LinearOperator


def gradient(x: Tensor) -> Tensor:
    """Forward differences of ``(B, C, H, W)`` images, ``(B, C, 2, H, W)`` (rows, cols)."""
    dy = torch.zeros_like(x)
    dx = torch.zeros_like(x)
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([dy, dx], dim=2)


def gradient_adjoint(g: Tensor) -> Tensor:
    """Adjoint of :func:`gradient` (the negative divergence)."""
    dy, dx = g[:, :, 0], g[:, :, 1]
    out = torch.zeros_like(dy)
    out[..., :-1, :] -= dy[..., :-1, :]
    out[..., 1:, :] += dy[..., :-1, :]
    out[..., :, :-1] -= dx[..., :, :-1]
    out[..., :, 1:] += dx[..., :, :-1]
    return out


def total_variation(x: Tensor) -> Tensor:
    """Isotropic TV per batch element, ``(B,)``."""
    g = gradient(x)
    return g.pow(2).sum(dim=2).sqrt().flatten(1).sum(dim=1)


class TV:
    """TV-regularised least squares by PDHG; called as ``tv(y, physics) -> x``.

    Args:
        weight: TV weight in the objective above, in the units of ``||y||^2 / TV(x)``.
            The default was tuned on the training phantoms for the sparse-view CT task
            (see ``benchmarks/RESULTS.md``).
        iterations: PDHG iterations.
        nonnegative: project onto ``x >= 0`` (attenuation, magnitude images).
    """

    nfe = 0

    def __init__(self, weight: float = 1e-2, iterations: int = 300, nonnegative: bool = True):
        if weight < 0 or iterations < 1:
            raise ValueError("TV needs weight >= 0 and iterations >= 1")
        self.weight = float(weight)
        self.iterations = int(iterations)
        self.nonnegative = nonnegative

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: LinearOperator, **_: object) -> Tensor:
        op_norm = physics.norm(iterations=30, generator=torch.Generator(device=y.device).manual_seed(0),
                               dtype=y.dtype, device=y.device)
        scale = op_norm / math.sqrt(8.0)  # ||grad||^2 <= 8 in 2D
        step = 0.99 / math.sqrt(op_norm**2 + (scale**2) * 8.0)
        bound = self.weight / scale  # dual ball radius for the rescaled gradient block
        x = torch.zeros((y.shape[0], *physics.in_shape), dtype=y.dtype, device=y.device)
        x_bar = x.clone()
        p = torch.zeros_like(y)
        q = torch.zeros_like(gradient(x))
        for _ in range(self.iterations):
            p = (p + step * (physics(x_bar) - y)) / (1.0 + step)
            if bound > 0:
                q = q + step * scale * gradient(x_bar)
                q = q / torch.clamp(q.pow(2).sum(dim=2, keepdim=True).sqrt() / bound, min=1.0)
            x_new = x - step * (physics.adjoint(p) + scale * gradient_adjoint(q))
            if self.nonnegative:
                x_new = x_new.clamp_min(0)
            x_bar = 2 * x_new - x
            x = x_new
        return x

    def __repr__(self) -> str:
        return f"TV(weight={self.weight:g}, iterations={self.iterations})"
