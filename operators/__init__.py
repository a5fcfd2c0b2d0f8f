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
from .ct import (
    CTGeometry,
    FanBeamCT,
    ParallelBeamCT,
    fan_beam_ct,
    limited_angle_angles,
    parallel_beam_ct,
    sparse_view_angles,
)
from .dense import MatrixOperator
from .noise import GaussianNoise, TransmissionNoise

__all__ = [
    "AdjointOperator",
    "CTGeometry",
    "ComposedOperator",
    "FanBeamCT",
    "GaussianNoise",
    "Identity",
    "LinearOperator",
    "MatrixOperator",
    "ParallelBeamCT",
    "ScaledOperator",
    "SumOperator",
    "TransmissionNoise",
    "conjugate_gradient",
    "fan_beam_ct",
    "inner",
    "limited_angle_angles",
    "parallel_beam_ct",
    "sparse_view_angles",
]
