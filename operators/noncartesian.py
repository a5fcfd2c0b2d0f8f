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

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, maps_batch={self.sens_maps.shape[0]}, samples={self.plan.samples}, "
                f"density={self.density is not None}, eps={self.plan.eps:g}")
