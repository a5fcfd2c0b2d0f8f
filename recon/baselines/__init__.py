"""Classical reconstructions that every diffusion result is compared against."""

from .fbp import FBP
from .mri import CGSense, L1Wavelet, ZeroFilled
from .tv import TV

__all__ = ["CGSense", "FBP", "L1Wavelet", "TV", "ZeroFilled"]
