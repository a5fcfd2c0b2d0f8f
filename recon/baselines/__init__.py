"""Classical reconstructions that every diffusion result is compared against."""

from .fbp import FBP
from .mri import CGSense, Gridding, L1Wavelet, ZeroFilled
from .structured import Destripe, Notch, Prefiltered
from .tv import TV
from .upsampling import Bicubic

__all__ = ["Bicubic", "CGSense", "Destripe", "FBP", "Gridding", "L1Wavelet", "Notch", "Prefiltered", "TV", "ZeroFilled"]
