"""The non-Cartesian MRI operator factory (radial, spiral) that pairs with the MRI data sources."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from operators import (NonCartesianMRI, golden_angle_radial, noncartesian_espirit_maps, pipe_menon_density,
                       radial_density, variable_density_spiral)
from ..errors import ConfigError

__all__ = ["DENSITIES", "TRAJECTORIES", "make_trajectory", "noncartesian_operator"]

TRAJECTORIES = ("radial", "spiral")
DENSITIES = ("analytic", "pipe_menon", "none")


def make_trajectory(kind: str, shape: Sequence[int], spokes: int = 64, samples: int | None = None,
                    interleaves: int = 16, acceleration: float = 4.0, power: float = 2.0) -> Tensor:
    """The ``(spokes or interleaves, samples, 2)`` trajectory of ``kind`` for images ``shape``:

    * ``radial``: ``spokes`` golden-angle full spokes of ``samples`` (default ``2 W``: twofold
      readout oversampling) (:func:`operators.golden_angle_radial`);
    * ``spiral``: ``interleaves`` variable-density arms (density ``t^power``), ``acceleration``
      times the Nyquist spacing between arms at the edge (:func:`operators.variable_density_spiral`).
    """
    try:
        if kind == "radial":
            return golden_angle_radial(int(spokes), int(samples) if samples else 2 * int(shape[-1]))
        if kind == "spiral":
            return variable_density_spiral(int(interleaves), shape, float(acceleration), float(power), samples)
    except ValueError as err:
        raise ConfigError(f"operator.trajectory: {err}") from None
    raise ConfigError(f"operator.trajectory.kind={kind!r}: valid kinds: {', '.join(TRAJECTORIES)}")


def noncartesian_operator(shape: Sequence[int], trajectory: dict, maps: Tensor | None = None,
                          kspace: Tensor | None = None, density: str = "analytic", eps: float = 1e-4,
                          measured_trajectory: Tensor | None = None, calib_width: int = 24) -> NonCartesianMRI:
    """Config factory: :class:`operators.NonCartesianMRI` for images ``shape = (H, W)``.

    ``trajectory``: the keyword arguments of :func:`make_trajectory` (``kind``, ...). ``maps``: the
    simulation's coil maps (``(C, H, W)`` or ``(B, C, H, W)``); without them, ESPIRiT maps from
    the centre (``calib_width``) of the scan's own samples ``kspace`` ``(B, C, *trajectory)``
    (:func:`operators.noncartesian_espirit_maps`). ``density``: ``analytic``
    (:func:`operators.radial_density`, radial only), ``pipe_menon`` (any trajectory) or ``none``;
    the weights serve the gridding and the classical baselines, not the samplers' likelihood.
    ``measured_trajectory``: a scan's own trajectory (radians, ``(..., 2)``; e.g. read from BART
    files), which replaces the configured one (``trajectory.kind`` then only picks the analytic
    density's validity).
    """
    if density not in DENSITIES:
        raise ConfigError(f"operator.density={density!r}: valid values: {', '.join(DENSITIES)}")
    shape = (int(shape[0]), int(shape[1]))
    traj = make_trajectory(shape=shape, **dict(trajectory)) if measured_trajectory is None else measured_trajectory
    kind = dict(trajectory).get("kind")
    if density == "analytic" and kind != "radial":
        raise ConfigError(f"operator.density=analytic is for radial trajectories; use pipe_menon for {kind}")
    weights = None
    if density == "analytic":
        weights = radial_density(traj, shape)
    elif density == "pipe_menon":
        weights = pipe_menon_density(traj, shape)
    if maps is None:
        maps = _maps_from_scan(kspace, traj, shape, calib_width, weights)
    return NonCartesianMRI(torch.as_tensor(maps), traj, density=weights, eps=eps)


def _maps_from_scan(kspace: Tensor | None, traj: Tensor, shape: tuple[int, int], calib_width: int,
                    weights: Tensor | None) -> Tensor:
    """ESPIRiT maps ``(B, C, H, W)`` from the centre of a scan's own non-Cartesian samples."""
    samples = tuple(traj.shape[:-1])
    if kspace is None or tuple(kspace.shape[2:]) != samples:
        got = "no coil maps" if kspace is None else f"k-space of shape {tuple(kspace.shape)}"
        raise ConfigError(f"operator: a non-Cartesian acquisition needs coil maps, or its own samples "
                          f"(B, C, {', '.join(map(str, samples))}) to estimate them from; the data gave {got}")
    try:
        return torch.stack([noncartesian_espirit_maps(k, traj, shape, calib_width, weights) for k in kspace])
    except ValueError as err:
        raise ConfigError(f"operator: coil maps from the scan's centre: {err}") from None
