"""Non-Cartesian k-space trajectories (golden-angle radial, variable-density spiral) and their density compensation.

Trajectories are float32 ``(..., 2)`` tensors of ``(k_y, k_x)`` in radians per pixel, ``[-pi,
pi]`` (:mod:`operators.nufft`'s convention; Nyquist at ``+-pi``). Density weights are in
Cartesian-cell units: a sample's weight is the k-space area it stands for divided by the area of
one cell of the ``H x W`` Cartesian grid, ``(2 pi / H) (2 pi / W)``, so that the full Cartesian
grid has weights 1 and the gridding reconstruction ``A^H W y`` keeps image intensities.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .nufft import NufftPlan, check_trajectory

__all__ = ["GOLDEN_ANGLE", "density_gain", "golden_angle_radial", "pipe_menon_density", "radial_density",
           "variable_density_spiral"]

GOLDEN_ANGLE = math.pi / ((1 + math.sqrt(5)) / 2)  # 111.246 degrees: full-spoke golden angle (Winkelmann 2007)


def golden_angle_radial(spokes: int, samples: int, first: int = 0) -> Tensor:
    """``(spokes, samples, 2)`` full spokes through the centre, spoke ``s`` at angle
    ``(first + s) * GOLDEN_ANGLE`` (mod 2 pi), samples at radii ``pi (2 i - samples) / samples``,
    ``i = 0 .. samples - 1`` (``samples = 2 N``: twofold readout oversampling of an ``N``-pixel
    image; the centre sample is ``i = samples / 2`` for even ``samples``). ``first`` continues a
    golden-angle sequence (e.g. the next frame of a dynamic scan)."""
    if spokes < 1 or samples < 2:
        raise ValueError(f"golden_angle_radial: need spokes >= 1 and samples >= 2, got {spokes}, {samples}")
    angles = (torch.arange(first, first + spokes, dtype=torch.float64) * GOLDEN_ANGLE) % (2 * math.pi)
    radii = math.pi * (2 * torch.arange(samples, dtype=torch.float64) - samples) / samples
    traj = torch.stack([radii[None] * torch.sin(angles[:, None]), radii[None] * torch.cos(angles[:, None])], dim=-1)
    return traj.float()


def variable_density_spiral(interleaves: int, shape: int | Sequence[int], acceleration: float = 1.0,
                            power: float = 2.0, samples: int | None = None) -> Tensor:
    """``(interleaves, samples, 2)`` Archimedean-type spirals ``k(t) = pi t^power exp(i (2 pi T t
    + 2 pi m / interleaves))``, ``t`` in ``[0, 1]``, arm ``m``.

    ``power > 1`` samples the centre more densely than the edge. ``T`` turns put the gap between
    neighbouring arms at the edge, ``pi power / (T interleaves)``, at ``acceleration`` times the
    Nyquist spacing ``2 pi / N`` (``N = max(shape)``): ``T = power N / (2 interleaves
    acceleration)``. ``samples`` per arm defaults to the count that keeps the spacing along the
    arm at the edge at or below ``2 pi / N``.
    """
    n = max(shape) if isinstance(shape, Sequence) else int(shape)
    if interleaves < 1 or not acceleration > 0 or not power >= 1 or n < 2:
        raise ValueError(f"variable_density_spiral: need interleaves >= 1, acceleration > 0, power >= 1, N >= 2; got "
                         f"{interleaves}, {acceleration}, {power}, {n}")
    turns = power * n / (2 * interleaves * acceleration)
    speed = math.pi * math.hypot(power, 2 * math.pi * turns)  # |dk/dt| at t = 1
    count = int(samples) if samples is not None else max(2, math.ceil(speed / (2 * math.pi / n)) + 1)
    t = torch.linspace(0, 1, count, dtype=torch.float64)
    radius = math.pi * t**power
    arms = 2 * math.pi * torch.arange(interleaves, dtype=torch.float64)[:, None] / interleaves
    angle = 2 * math.pi * turns * t[None] + arms
    return torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=-1).float()


def _cell_area(shape: Sequence[int]) -> float:
    return (2 * math.pi / shape[0]) * (2 * math.pi / shape[1])


def radial_density(trajectory: Tensor, shape: Sequence[int]) -> Tensor:
    """Analytic weights of full-spoke radial sampling ``(spokes, samples, 2)``: the area of each
    sample's annular sector, ``pi |k| dk / spokes`` (``2 spokes`` samples share each circle), the
    centre sample ``pi (dk / 2)^2 / spokes``, in Cartesian-cell units (module docstring)."""
    traj = check_trajectory(trajectory).to(torch.float64)
    if traj.dim() != 3:
        raise ValueError(f"radial_density: need (spokes, samples, 2), got {tuple(traj.shape)}")
    spokes, samples = traj.shape[:2]
    radius = traj.norm(dim=-1)
    dk = 2 * math.pi / samples
    area = torch.where(radius > dk / 2, math.pi * radius * dk / spokes, torch.full_like(radius, math.pi * (dk / 2) ** 2 / spokes))
    return (area / _cell_area(shape)).float()


def pipe_menon_density(trajectory: Tensor, shape: Sequence[int], iterations: int = 30) -> Tensor:
    """Iterative weights for any trajectory (Pipe and Menon 1999, ``w <- w / (C * w)``) from
    ``sigpy.mri.pipe_menon_dcf``, rescaled to Cartesian-cell units with :func:`density_gain`."""
    import sigpy.mri

    traj = check_trajectory(trajectory)
    coord = traj.double().numpy() * (np.asarray(shape, dtype=np.float64) / (2 * math.pi))
    weights = torch.from_numpy(np.asarray(sigpy.mri.pipe_menon_dcf(coord, tuple(shape), max_iter=iterations,
                                                                   show_pbar=False))).to(torch.float32)
    return weights / density_gain(traj, weights, shape)


def density_gain(trajectory: Tensor, density: Tensor, shape: Sequence[int], width: float = 0.08) -> float:
    """How much the gridding ``F^H W F`` amplifies a smooth image: ``<x, F^H W F x> / <x, x>`` for a
    centred Gaussian ``x`` of standard deviation ``width`` fields of view (1 for weights in
    Cartesian-cell units of a trajectory that covers the disk ``|k| <= pi``)."""
    height, width_px = int(shape[0]), int(shape[1])
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64) - height // 2,
                          torch.arange(width_px, dtype=torch.float64) - width_px // 2, indexing="ij")
    blob = torch.exp(-((y / height) ** 2 + (x / width_px) ** 2) / (2 * width**2)).to(torch.complex128)[None]
    plan = NufftPlan(trajectory, (height, width_px), eps=1e-9)
    samples = plan.forward(blob)
    weighted = torch.as_tensor(density, dtype=torch.float64).reshape(1, -1) * samples
    return float((samples.conj() * weighted).sum().real / blob.abs().square().sum())
