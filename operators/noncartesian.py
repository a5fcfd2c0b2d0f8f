"""Multi-coil non-Cartesian MRI (radial, spiral, any trajectory): ``A = F_k S`` with a NUFFT ``F_k``.

``y_c(k_j) = F(S_c x)(k_j)``: coil sensitivities ``S``, then the NUFFT of :mod:`operators.nufft`
at the trajectory's samples ``k_j = (k_y, k_x)`` in radians per pixel, ``[-pi, pi]``, scaled so
that the full Cartesian trajectory gives :class:`operators.MultiCoilMRI` with a full mask
exactly. Images ``(B, 1, H, W)`` complex; samples ``(B, C, *trajectory.shape[:-1])``, e.g.
``(B, C, spokes, readout)`` for radial. The density compensation (optional) is not part of
``A``: it weighs the data of :meth:`NonCartesianMRI.gridding` (``A^H W y``, the gridding
reconstruction) and of preconditioned solvers, never the likelihood the samplers use.

Example (8 birdcage coils, 64 golden-angle spokes)::

    from operators import NonCartesianMRI, birdcage_maps, golden_angle_radial, radial_density
    traj = golden_angle_radial(spokes=64, samples=512)
    A = NonCartesianMRI(birdcage_maps(8, (256, 256)), traj, density=radial_density(traj, (256, 256)))
    y = A(x)                      # (B, 8, 64, 512)
    x_grid = A.gridding(y)        # (B, 1, 256, 256)
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

from .base import LinearOperator
from .nufft import NufftPlan, check_trajectory, nufft, nufft_adjoint

__all__ = ["NonCartesianMRI"]


def _as_complex(x: Tensor) -> Tensor:
    if x.is_complex():
        return x
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


class NonCartesianMRI(LinearOperator):
    """SENSE with a NUFFT: complex ``(B, 1, H, W) -> (B, C, *trajectory.shape[:-1])``.

    Args:
        sens_maps: complex ``(C, H, W)`` shared by the batch, or ``(B, C, H, W)`` per sample.
        trajectory: real ``(..., 2)`` ``(k_y, k_x)`` radians in ``[-pi, pi]`` (ValueError
            otherwise), shared by the batch.
        density: optional real weights of the trajectory's shape without the last axis (e.g.
            :func:`operators.radial_density`, :func:`operators.pipe_menon_density`), used by
            :meth:`gridding` only.
        eps: the NUFFT's requested relative accuracy.
    """

    def __init__(self, sens_maps: Tensor, trajectory: Tensor, density: Tensor | None = None, eps: float = 1e-5):
        maps = torch.as_tensor(sens_maps)
        if maps.dim() == 3:
            maps = maps.unsqueeze(0)
        if maps.dim() != 4 or maps.shape[1] < 1:
            raise ValueError(f"sens_maps must be (C, H, W) or (B, C, H, W), got shape {tuple(maps.shape)}")
        traj = check_trajectory(trajectory)
        coils, height, width = maps.shape[1:]
        sample_shape = tuple(traj.shape[:-1])
        super().__init__((1, height, width), (coils, *sample_shape))
        self.register_buffer("sens_maps", maps.to(torch.complex64))
        self.register_buffer("trajectory", traj.to(torch.float32))
        if density is not None:
            density = torch.as_tensor(density, dtype=torch.float32)
            if tuple(density.shape) != sample_shape:
                raise ValueError(f"density of shape {tuple(density.shape)} does not match the trajectory's "
                                 f"samples {sample_shape}")
            if not bool(torch.isfinite(density).all()) or bool((density < 0).any()):
                raise ValueError("density: weights must be finite and >= 0")
        self.register_buffer("density", density)
        self.plan = NufftPlan(traj, (height, width), eps)

    @property
    def support(self) -> Tensor:
        """``(1 or B, 1, H, W)`` float32 0/1: where any coil sees the image (samplers restrict to it)."""
        return (self.sens_maps.abs().square().sum(dim=1, keepdim=True) > 0).float()

    def _maps(self, like: Tensor) -> Tensor:
        return self.sens_maps.to(like.dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = _as_complex(x)
        coil_images = self._maps(x) * x
        batch, coils = coil_images.shape[:2]
        samples = nufft(coil_images.reshape(batch * coils, *self.in_shape[1:]), self.plan)
        return samples.reshape(batch, coils, *self.out_shape[1:])

    def adjoint(self, y: Tensor) -> Tensor:
        y = _as_complex(y)
        batch, coils = y.shape[:2]
        images = nufft_adjoint(y.reshape(batch * coils, -1), self.plan).reshape(batch, coils, *self.in_shape[1:])
        return (self._maps(y).conj() * images).sum(dim=1, keepdim=True)

    def gridding(self, y: Tensor) -> Tensor:
        """The gridding reconstruction ``A^H W y`` (``W`` = ``density``; plain ``A^H y`` without one)."""
        return self.adjoint(y if self.density is None else self.density.to(y.device) * y)

    def preconditioner(self, mu: float) -> Callable[[Tensor], Tensor]:
        """``P ~ (A^H A + mu I)^-1`` for preconditioned CG: ``x -> F^-1 (F x / (s c + mu))``.

        ``A^H A = sum_c S_c^H T S_c`` with ``T`` the trajectory's Toeplitz point-spread operator,
        ``T x (n) = sum_m t(n - m) x(m)``, ``t(d) = sum_j exp(i k_j . d) / (H W)``. ``P``
        replaces ``T`` by its optimal circulant approximation (T. Chan's: the lags folded onto
        the ``H x W`` torus with weights ``(1 - |d_y| / H)(1 - |d_x| / W)``), whose spectrum
        ``c`` is the trajectory's density on the Cartesian grid, and the coils by ``s``, the
        mean of ``sum_c |S_c|^2`` over the support. For radial sampling ``c`` falls like
        ``1 / |k|``, the spread CG otherwise spends its iterations on. ``P`` is Hermitian
        positive definite for ``mu > 0``; the solution is unchanged, only the iterations to it.
        """
        if not mu > 0:
            raise ValueError(f"preconditioner: mu must be > 0, got {mu}")
        spectrum = self._circulant_spectrum
        if spectrum.device != self.sens_maps.device:  # once per device, not once per CG step
            spectrum = self.__dict__["_circulant_spectrum"] = spectrum.to(self.sens_maps.device)
        denominator = spectrum + mu

        def apply(x: Tensor) -> Tensor:
            return torch.fft.ifft2(torch.fft.fft2(x) / denominator.to(x.real.dtype)).to(x.dtype)

        return apply

    @functools.cached_property
    def _circulant_spectrum(self) -> Tensor:
        """``s c``: the coil gain times the circulant spectrum of :meth:`preconditioner` (``(H, W)``)."""
        height, width = self.in_shape[1:]
        double = NufftPlan(self.trajectory, (2 * height, 2 * width), self.plan.eps)
        ones = torch.ones(1, self.plan.samples, dtype=torch.complex128)
        lags = double.adjoint(ones)[0] / (double.scale * height * width)  # t(d), d = n - (H, W)
        weight_y = 1.0 - (torch.arange(2 * height, dtype=torch.float64) - height).abs() / height
        weight_x = 1.0 - (torch.arange(2 * width, dtype=torch.float64) - width).abs() / width
        folded = (lags * weight_y[:, None] * weight_x[None, :]).reshape(2, height, 2, width).sum(dim=(0, 2))
        spectrum = torch.fft.fft2(folded).real.clamp_min(0.0)
        power = self.sens_maps.abs().square().sum(dim=1)
        gain = float(power[power > 0].mean()) if bool((power > 0).any()) else 1.0
        return (gain * spectrum).to(torch.float32)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, maps_batch={self.sens_maps.shape[0]}, samples={self.plan.samples}, "
                f"density={self.density is not None}, eps={self.plan.eps:g}")
