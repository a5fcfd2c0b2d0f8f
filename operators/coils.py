"""Coil sensitivity maps: simulated birdcage maps and ESPIRiT estimates (both via sigpy).

Maps are complex64 ``(C, H, W)`` torch tensors normalised so that ``sum_c |S_c|^2 = 1`` at every
pixel where they are non-zero (everywhere for birdcage maps, inside the object for ESPIRiT).
With that normalisation ``sum_c conj(S_c) S_c x = x`` there, so the SENSE adjoint of fully
sampled data returns the image itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["birdcage_maps", "espirit_maps", "noncartesian_espirit_maps", "normalize_maps"]


def normalize_maps(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale ``(C, H, W)`` maps so the root-sum-of-squares over coils is 1 (0 where it was 0)."""
    rss = maps.abs().square().sum(dim=0, keepdim=True).sqrt()
    return torch.where(rss > eps, maps / rss.clamp_min(eps), torch.zeros_like(maps))


def birdcage_maps(coils: int, shape: Sequence[int], relative_radius: float = 1.5) -> Tensor:
    """Simulated birdcage coil maps, complex64 ``(coils, H, W)``, ``sum_c |S_c|^2 = 1``.

    ``sigpy.mri.birdcage_maps``: ``coils`` point-like coils equally spaced on a circle of radius
    ``relative_radius`` (in units of the half field of view) around the image centre, each with
    a 1/distance magnitude and a phase that winds around the coil.
    """
    import sigpy.mri  # deferred: importing sigpy takes seconds

    height, width = (int(n) for n in shape)
    maps = sigpy.mri.birdcage_maps((coils, height, width), r=relative_radius)
    return normalize_maps(torch.from_numpy(maps).to(torch.complex64))


def espirit_maps(
    kspace: Tensor | np.ndarray,
    calib_width: int = 24,
    thresh: float = 0.02,
    kernel_width: int = 6,
    crop: float = 0.95,
    max_iter: int = 100,
) -> Tensor:
    """ESPIRiT maps (``sigpy.mri.app.EspiritCalib``) from centred k-space ``(C, H, W)``.

    ``kspace`` is complex (numpy or torch, any device; computed on the CPU in numpy) in the
    layout of :func:`operators.mri.fft2c` (DC at ``(H // 2, W // 2)``); the central
    ``calib_width`` x ``calib_width`` block must be fully sampled. Pixels whose ESPIRiT
    eigenvalue is below ``crop`` (outside the object) get 0. Phases are relative to coil 0.
    Returns complex64 ``(C, H, W)`` on the CPU, normalised as the module docstring says.

    BLAS runs single-threaded here: the calibration matrices are small, and on a busy 2-core
    machine multithreaded OpenBLAS beside torch's OpenMP pool made the SVD take 7.6 s, not 0.02 s.
    """
    from sigpy.mri.app import EspiritCalib  # deferred: importing sigpy takes seconds
    from threadpoolctl import threadpool_limits

    data = kspace.detach().cpu().numpy() if isinstance(kspace, Tensor) else np.asarray(kspace)
    if data.ndim != 3 or not np.iscomplexobj(data):
        raise ValueError(f"kspace must be complex (C, H, W), got {data.dtype} of shape {data.shape}")
    with threadpool_limits(1, user_api="blas"):
        app = EspiritCalib(
            data.astype(np.complex64),
            calib_width=calib_width,
            thresh=thresh,
            kernel_width=kernel_width,
            crop=crop,
            max_iter=max_iter,
            show_pbar=False,
        )
        maps = np.asarray(app.run())
    return normalize_maps(torch.from_numpy(maps).to(torch.complex64))


def noncartesian_espirit_maps(samples: Tensor, trajectory: Tensor, shape: Sequence[int], calib_width: int = 24,
                              density: Tensor | None = None, **espirit: float) -> Tensor:
    """ESPIRiT maps ``(C, H, W)`` from a non-Cartesian scan's own centre (radial, spiral, ...).

    The samples ``(C, *trajectory.shape[:-1])`` inside the ``calib_width`` x ``calib_width``
    Cartesian centre (``|k_y| <= pi calib_width / H``, same for ``k_x``) are gridded per coil with
    the density weights (``density``, else Pipe-Menon's) by the adjoint NUFFT; the centred FFT of
    those low-resolution coil images is the calibration block :func:`espirit_maps` takes
    (``espirit``: its other keywords). The trajectory must sample that centre densely (radial and
    variable-density spirals do).
    """
    from .mri import fft2c
    from .nufft import NufftPlan, check_trajectory
    from .trajectories import pipe_menon_density

    traj = check_trajectory(trajectory)
    height, width = (int(n) for n in shape)
    if samples.shape[1:] != traj.shape[:-1]:
        raise ValueError(f"samples of shape {tuple(samples.shape)} do not match the trajectory's {tuple(traj.shape[:-1])}")
    weights = pipe_menon_density(traj, (height, width)) if density is None else torch.as_tensor(density)
    centre = (traj[..., 0].abs() <= torch.pi * calib_width / height) & (traj[..., 1].abs() <= torch.pi * calib_width / width)
    data = (samples.detach().cpu() * (weights * centre).to(samples.real.dtype)).reshape(samples.shape[0], -1)
    coil_images = NufftPlan(traj, (height, width)).adjoint(data.to(torch.complex64))
    return espirit_maps(fft2c(coil_images), calib_width=calib_width, **espirit)
