"""Bicubic upsampling: the classical baseline for super-resolution."""

from __future__ import annotations

import torch
from torch import Tensor

from operators import Downsampling


class Bicubic:
    """``y`` (low resolution) -> bicubic interpolation onto the operator's input grid.

    Keys' cubic convolution (``a = -0.75``, torch's ``interpolate(mode="bicubic",
    align_corners=False)``), the low-resolution pixel centres sitting at the centres of the
    ``factor x factor`` blocks, which is where area averaging puts them. ``nonnegative``
    clips the overshoot below zero (attenuation, magnitudes). Called as
    ``bicubic(y, physics) -> x`` with a :class:`operators.Downsampling` ``physics`` (ValueError
    for any other operator).
    """

    nfe = 0

    def __init__(self, nonnegative: bool = True):
        self.nonnegative = nonnegative

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: Downsampling, **_: object) -> Tensor:
        if not isinstance(physics, Downsampling):
            raise ValueError(f"Bicubic needs a Downsampling physics, got {type(physics).__name__}")
        x = torch.nn.functional.interpolate(y, size=tuple(physics.in_shape[1:]), mode="bicubic", align_corners=False)
        return x.clamp_min(0) if self.nonnegative else x
