"""Classical reconstructions that every diffusion result is compared against."""

from .fbp import FBP
from .mri import CGSense, L1Wavelet, ZeroFilled
from .tv import TV
from .upsampling import Bicubic

__all__ = ["Bicubic", "CGSense", "FBP", "L1Wavelet", "TV", "ZeroFilled"]
