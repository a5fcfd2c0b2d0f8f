"""Classical reconstructions that every diffusion result is compared against."""

from .fbp import FBP
from .tv import TV

__all__ = ["FBP", "TV"]
