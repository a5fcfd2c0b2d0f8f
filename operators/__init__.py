"""Differentiable forward models ``y = A(x) + n`` with exact adjoints."""

from .base import (
    AdjointOperator,
    ComposedOperator,
    Identity,
    LinearOperator,
    ScaledOperator,
    SumOperator,
    inner,
)
from .cg import conjugate_gradient
from .dense import MatrixOperator
from .noise import GaussianNoise, TransmissionNoise

__all__ = [
    "AdjointOperator",
    "ComposedOperator",
    "GaussianNoise",
    "Identity",
    "LinearOperator",
    "MatrixOperator",
    "ScaledOperator",
    "SumOperator",
    "TransmissionNoise",
    "conjugate_gradient",
    "inner",
]
