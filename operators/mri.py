"""Multi-coil Cartesian MRI: ``A = M F S`` with coil sensitivities S, a centred FFT F and a mask M.

FFT convention (fastMRI's and sigpy's): ``ifftshift -> fft2(norm="ortho") -> fftshift`` over the
last two dims, so the DC sample sits at index ``(H // 2, W // 2)`` and F is unitary. Images
``(B, 1, H, W)`` are complex; k-space is ``(B, C, H, W)``. The mask multiplies k-space (it is
not square-rooted as sigpy's ``weights`` are; the two agree for 0/1 masks). A single-coil
acquisition is the case ``C = 1`` with maps of ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LinearOperator

__all__ = ["MultiCoilMRI", "fft2c", "ifft2c"]

_DIMS = (-2, -1)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2D FFT over the last two dims (image -> k-space), any leading dims."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal 2D inverse FFT over the last two dims (k-space -> image)."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def _as_complex(x: Tensor) -> Tensor:
    if x.is_complex():
        return x
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


class MultiCoilMRI(LinearOperator):
    """SENSE forward model ``y_c = M * F(S_c x)``, complex ``(B, 1, H, W) -> (B, C, H, W)``.

    ``sens_maps``: complex ``(C, H, W)`` shared by the batch, or ``(B, C, H, W)`` per sample.
    ``mask``: real (0/1 or weights), broadcastable to ``(B, C, H, W)``: ``(W,)`` for a 1D
    column (phase-encode) mask, ``(H, W)`` for a 2D mask, ``(B, 1, H, W)`` per sample.
    The adjoint is ``sum_c conj(S_c) F^H (M y_c)``. Buffers are complex64/float32; complex128
    inputs are computed in complex128, real inputs are promoted to complex.
    """

    def __init__(self, sens_maps: Tensor, mask: Tensor):
        maps = torch.as_tensor(sens_maps)
        if maps.dim() == 3:
            maps = maps.unsqueeze(0)
        if maps.dim() != 4:
            raise ValueError(f"sens_maps must be (C, H, W) or (B, C, H, W), got shape {tuple(maps.shape)}")
        coils, height, width = maps.shape[1:]
        mask = torch.as_tensor(mask, dtype=torch.float32)
        try:
            full = torch.broadcast_shapes(mask.shape, (1, coils, height, width))
        except RuntimeError:
            full = ()
        if len(full) != 4 or full[1:] != (coils, height, width):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to (B, {coils}, {height}, {width})"
            )
        super().__init__((1, height, width), (coils, height, width))
        self.register_buffer("sens_maps", maps.to(torch.complex64))
        self.register_buffer("mask", mask)

    def _maps(self, like: Tensor) -> Tensor:
        return self.sens_maps.to(like.dtype)

    @property
    def support(self) -> Tensor:
        """``(1 or B, 1, H, W)`` float32 0/1: where any coil sees the image. Outside it (ESPIRiT
        maps cropped to the object) the data say nothing; samplers restrict images to it."""
        return (self.sens_maps.abs().square().sum(dim=1, keepdim=True) > 0).float()

    def forward(self, x: Tensor) -> Tensor:
        x = _as_complex(x)
        return self.mask * fft2c(self._maps(x) * x)

    def adjoint(self, y: Tensor) -> Tensor:
        y = _as_complex(y)
        return (self._maps(y).conj() * ifft2c(self.mask * y)).sum(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        maps_batch, mask_shape = self.sens_maps.shape[0], tuple(self.mask.shape)
        return f"{super().extra_repr()}, maps_batch={maps_batch}, mask_shape={mask_shape}"
