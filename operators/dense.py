"""Explicit (dense) operators: small matrices, for tests and analytic validation."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import LinearOperator


class MatrixOperator(LinearOperator):
    """``y = M x`` with a dense ``(m, n)`` matrix, applied to flattened inputs.

    Maps ``(B, *in_shape)`` with ``prod(in_shape) == n`` to ``(B, *out_shape)`` with
    ``prod(out_shape) == m``; real or complex.
    """

    def __init__(self, matrix: Tensor, in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None):
        m, n = matrix.shape
        in_shape = (n,) if in_shape is None else tuple(in_shape)
        out_shape = (m,) if out_shape is None else tuple(out_shape)
        if torch.Size(in_shape).numel() != n or torch.Size(out_shape).numel() != m:
            raise ValueError(f"matrix of shape {(m, n)} does not fit in_shape {in_shape} / out_shape {out_shape}")
        super().__init__(in_shape, out_shape)
        self.register_buffer("matrix", matrix)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1).to(self.matrix.dtype)
        return (flat @ self.matrix.T).reshape(x.shape[0], *self.out_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        flat = y.reshape(y.shape[0], -1).to(self.matrix.dtype)
        return (flat @ self.matrix.conj()).reshape(y.shape[0], *self.in_shape)
