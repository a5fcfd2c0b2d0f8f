"""An MRI run's measurement, coil maps, sampling and images as BART ``.cfl``/``.hdr`` files.

:func:`write_bart_run` fills a run folder's ``bart/`` subfolder (``recon.report.write_run`` calls
it for every run; it writes only for MRI operators, those with ``sens_maps``). Layouts are those
of :mod:`recon.io.cfl`:

* ``kspace``: the measurement ``y`` as run (noise included, unsampled Cartesian entries 0):
  Cartesian ``(H, W, 1, C)``, non-Cartesian ``(1, samples, spokes, C)``;
* ``maps``: the operator's coil maps ``(H, W, 1, C)`` (one set);
* ``traj`` (non-Cartesian): the trajectory ``(3, samples, spokes)`` in BART's pixel units;
* ``pattern`` (Cartesian): the 0/1 mask ``(H, W, 1, 1)``, for ``bart pics -p`` (``pics`` infers
  the same pattern from the zeros of ``kspace`` when it is left out);
* ``truth`` and ``recon_NAME`` (one per method): complex ``(H, W)`` images.

Scale (measured with BART 0.8.00, ``tests/test_bart_files.py``): ``bart pics`` models both the
Cartesian and the non-Cartesian acquisition exactly as recon's operators do (a unitary centred FFT;
a NUFFT normalised by ``1 / sqrt(H W)``, unlike the ``bart nufft`` command), so with ``-S`` (or
``-w 1``) its images are in recon's scale, comparable with ``truth`` and ``recon_NAME`` as they are::

    bart pics -S -l2 -r 0.001 -t traj kspace maps out      # non-Cartesian
    bart pics -S -l2 -r 0.001 kspace maps out              # Cartesian

Without ``-S`` ``pics`` leaves its image divided by its automatic data scaling.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .cfl import (
    kspace_to_bart_noncart,
    to_bart_coils,
    to_bart_image,
    trajectory_to_bart,
    write_cfl,
)

__all__ = ["BART_FOLDER", "write_bart_run"]

BART_FOLDER = "bart"


def _first(t: Tensor) -> Tensor:
    """The first sample of a batched tensor, on the CPU."""
    return t.detach()[0].cpu()


def _noncartesian(y: Tensor, trajectory: Tensor) -> tuple[Tensor, Tensor]:
    """``y`` ``(C, *samples)`` and the trajectory ``(*samples, 2)`` as ``(C, spokes, samples)`` and
    ``(spokes, samples, 2)``: leading sample axes are merged into spokes (a flat list is one spoke)."""
    traj = trajectory.detach().cpu()
    traj = traj.reshape(-1, *traj.shape[-2:]) if traj.dim() >= 3 else traj[None]
    return y.reshape(y.shape[0], *traj.shape[:2]), traj


def write_bart_run(folder: Path, physics: torch.nn.Module, y: Tensor, truth: Tensor,
                   images: Mapping[str, Tensor]) -> Path | None:
    """Write ``folder`` (created; files already there are never replaced) for an MRI run: the
    first sample of ``y`` ``(B, C, ...)``, of the operator's maps, of ``truth`` and of each
    ``images[name]`` ``(B, 1, H, W)`` (module docstring). Returns ``folder``, or None (nothing
    written) when ``physics`` is not an MRI operator or the images are not 2D."""
    if not hasattr(physics, "sens_maps") or truth.dim() != 4:
        return None
    maps = _first(physics.sens_maps)  # (C, H, W)
    shape = tuple(maps.shape[-2:])
    folder.mkdir(parents=True, exist_ok=True)
    trajectory = getattr(physics, "trajectory", None)
    if trajectory is not None:
        kspace, traj = _noncartesian(_first(y), trajectory)
        write_cfl(folder / "kspace", kspace_to_bart_noncart(kspace))
        write_cfl(folder / "traj", trajectory_to_bart(traj, shape))
    else:
        write_cfl(folder / "kspace", to_bart_coils(_first(y)))
        mask = physics.mask.detach().cpu()
        pattern = torch.broadcast_to(mask.reshape(-1, *mask.shape[-2:])[0] if mask.dim() > 2 else mask, shape)
        write_cfl(folder / "pattern", to_bart_image(pattern)[:, :, None, None])
    write_cfl(folder / "maps", to_bart_coils(maps))
    write_cfl(folder / "truth", to_bart_image(_first(truth)[0]))
    for name, image in images.items():
        write_cfl(folder / f"recon_{name}", to_bart_image(_first(image)[0]))
    return folder
