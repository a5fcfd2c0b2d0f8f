"""Differentiable forward models ``y = A(x) + n`` with exact adjoints."""

from .base import (
    AdjointOperator,
    ComposedOperator,
    Identity,
    LinearOperator,
    ScaledOperator,
    SumOperator,
    adjoint_error,
    identity,
    inner,
)
from .blur import GaussianBlur
from .cg import conjugate_gradient
from .coils import birdcage_maps, espirit_maps, noncartesian_espirit_maps, normalize_maps
from .cone import ConeBeamCT, cone_beam_ct
from .cone_torch import TorchConeProjector
from .ct import (
    MU_WATER,
    CTGeometry,
    FanBeamCT,
    ParallelBeamCT,
    fan_beam_ct,
    limited_angle_angles,
    parallel_beam_ct,
    sparse_view_angles,
)
from .dense import MatrixOperator
from .inpainting import Inpainting, box_mask, inpainting, random_pixel_mask, stroke_mask
from .masks import (
    MASK_KINDS,
    SampledMask,
    equispaced_mask,
    gaussian1d,
    gaussian2d,
    make_mask,
    poisson_disc2d,
    random_mask,
)
from .mri import MultiCoilMRI, fft2c, ifft2c
from .noncartesian import NonCartesianMRI
from .noise import DetectorStripes, GaussianNoise, Interference, StructuredNoise, TransmissionNoise
from .resampling import Downsampling, SeparableOperator, downsampling
from .trajectories import (GOLDEN_ANGLE, density_gain, golden_angle_radial, pipe_menon_density, radial_density,
                           variable_density_spiral)

__all__ = [
    "AdjointOperator",
    "CTGeometry",
    "ConeBeamCT",
    "ComposedOperator",
    "DetectorStripes",
    "Downsampling",
    "FanBeamCT",
    "GaussianBlur",
    "GaussianNoise",
    "Identity",
    "Inpainting",
    "Interference",
    "LinearOperator",
    "MASK_KINDS",
    "MU_WATER",
    "MatrixOperator",
    "MultiCoilMRI",
    "NonCartesianMRI",
    "GOLDEN_ANGLE",
    "ParallelBeamCT",
    "SampledMask",
    "ScaledOperator",
    "SeparableOperator",
    "StructuredNoise",
    "SumOperator",
    "TorchConeProjector",
    "TransmissionNoise",
    "birdcage_maps",
    "cone_beam_ct",
    "density_gain",
    "golden_angle_radial",
    "pipe_menon_density",
    "radial_density",
    "variable_density_spiral",
    "box_mask",
    "conjugate_gradient",
    "downsampling",
    "equispaced_mask",
    "espirit_maps",
    "fan_beam_ct",
    "identity",
    "fft2c",
    "gaussian1d",
    "gaussian2d",
    "ifft2c",
    "adjoint_error",
    "inner",
    "inpainting",
    "limited_angle_angles",
    "make_mask",
    "noncartesian_espirit_maps",
    "normalize_maps",
    "parallel_beam_ct",
    "poisson_disc2d",
    "random_mask",
    "random_pixel_mask",
    "sparse_view_angles",
    "stroke_mask",
]
