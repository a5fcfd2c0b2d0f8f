"""A scan read from BART ``.cfl``/``.hdr`` files (k-space, coil maps, trajectory) as a data source.

``data=bart`` (:func:`bart_scan`) reads the layouts of :mod:`recon.io.cfl`, those a run's ``bart/``
folder holds (:mod:`recon.io.bart_run`): k-space ``(H, W, 1, C)`` (Cartesian) or
``(1, samples, spokes, C)`` with a trajectory ``(3, samples, spokes)`` in pixel units
(non-Cartesian), maps ``(H, W, 1, C)``, an optional reference image ``(H, W)``.

The measurement is the file's k-space as it is: the ``noise`` node is not applied (the scan has its
own noise) and the seed does not change it. The operator is built from the scan: the maps, and
``mask`` (Cartesian: the non-zero columns, or points, of the k-space; it replaces the ``mask``
config node) or ``measured_trajectory`` (non-Cartesian, radians; it replaces
``operator.trajectory``'s own). Images are in the scale of recon's operators, the scale of
``bart pics -S`` (:mod:`recon.io.bart_run`); a reference must be in it too.

Without a reference the engine still needs an image to score against: the source then stands in
the root-sum-of-squares of the zero-filled (Cartesian) or density-compensated gridded
(non-Cartesian, Pipe-Menon weights) coil images, and says so in its ``name`` and ``units``: such
scores compare methods with a crude image, not with the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from operators import ifft2c, pipe_menon_density
from operators.nufft import NufftPlan, nufft_adjoint

from ..errors import ConfigError, InputError
from ..io.cfl import (
    from_bart_coils,
    from_bart_image,
    kspace_from_bart_noncart,
    read_cfl,
    trajectory_from_bart,
)
from .sources import accepted_inputs

__all__ = ["NO_REFERENCE", "BartScan", "bart_scan", "sampling_mask"]

NO_REFERENCE = "no reference: RSS of the coil images"  # marks a stand-in truth in name and units


@dataclass
class BartScan:
    """A measured scan (the data-source protocol of :mod:`recon.data.sources`).

    ``image``: the reference ``(1, 1, H, W)`` (or the stand-in). ``maps``: ``(C, H, W)`` complex64.
    ``kspace``: ``(1, C, H, W)`` (Cartesian) or ``(1, C, spokes, samples)``. ``mask``: float32 0/1
    ``(W,)`` or ``(H, W)``, Cartesian only. ``trajectory``: ``(spokes, samples, 2)`` radians,
    non-Cartesian only.
    """

    image: Tensor
    pixel_size_cm: float
    name: str
    maps: Tensor
    kspace: Tensor
    mask: Tensor | None = None
    trajectory: Tensor | None = None
    units: str = "a.u."

    def to(self, device: torch.device) -> BartScan:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return replace(self, image=self.image.to(device), maps=self.maps.to(device), kspace=self.kspace.to(device),
                       mask=move(self.mask), trajectory=move(self.trajectory))

    def operator_inputs(self, factory: Callable[..., Any] | None = None) -> dict[str, Any]:
        """``shape`` (H, W), ``maps`` and ``mask`` (Cartesian) or ``measured_trajectory``: those
        that ``factory`` takes (:func:`recon.data.sources.accepted_inputs`; all without one)."""
        inputs: dict[str, Any] = {"shape": tuple(self.maps.shape[-2:]), "maps": self.maps}
        if self.trajectory is None:
            inputs["mask"] = self.mask
        else:
            inputs["measured_trajectory"] = self.trajectory.cpu()
        return accepted_inputs(inputs, factory)

    def measure(self, physics: torch.nn.Module, noise: Any, generator: torch.Generator) -> Tensor:
        """The scan's k-space; ``noise`` and ``generator`` are not used. ConfigError when the
        operator is not of the scan's kind (Cartesian or not) or does not produce its shape."""
        noncartesian = hasattr(physics, "trajectory")
        if noncartesian != (self.trajectory is not None):
            have, use = (("Cartesian k-space (data.trajectory=null)", "task=mri_multicoil") if self.trajectory is None
                         else ("non-Cartesian k-space (data.trajectory given)", "task=mri_radial or task=mri_spiral"))
            raise ConfigError(f"data=bart: the scan is {have} but the operator is not; use {use}")
        expected = tuple(getattr(physics, "out_shape", self.kspace.shape[1:]))
        if tuple(self.kspace.shape[1:]) != expected:
            raise ConfigError(f"data=bart: the operator measures {expected}, the k-space is {tuple(self.kspace.shape[1:])}")
        return self.kspace


def sampling_mask(kspace: Tensor) -> Tensor:
    """The 0/1 float32 mask of Cartesian k-space ``(C, H, W)``: ``(W,)`` when every column is
    sampled in all rows or none (a phase-encode mask), else ``(H, W)``; a point is sampled where
    any coil is non-zero."""
    points = (kspace != 0).any(dim=0)
    columns = points.any(dim=0)
    if bool((points == columns).all()):
        return columns.to(torch.float32)
    return points.to(torch.float32)


def _read(path: str, convert: Callable[[Any], Tensor], *args: Any) -> Tensor:
    """``convert(read_cfl(path), *args)``, a layout ValueError becoming an InputError on ``path``."""
    try:
        return convert(read_cfl(path), *args)
    except ValueError as err:
        raise InputError(path, str(err)) from None


def _stand_in(kspace: Tensor, trajectory: Tensor | None, shape: tuple[int, int]) -> Tensor:
    """RSS ``(1, 1, H, W)`` of the zero-filled or Pipe-Menon-gridded coil images of ``kspace`` ``(C, ...)``."""
    if trajectory is None:
        coils = ifft2c(kspace)
    else:
        weights = pipe_menon_density(trajectory, shape).reshape(-1)
        coils = nufft_adjoint(kspace.reshape(kspace.shape[0], -1) * weights, NufftPlan(trajectory, shape))
    return coils.abs().square().sum(dim=0).sqrt()[None, None].to(torch.float32)


def bart_scan(kspace: str, maps: str, trajectory: str | None = None, reference: str | None = None,
              pixel_size_cm: float = 0.1) -> BartScan:
    """The scan of the BART arrays ``kspace`` and ``maps`` (base paths, ``.cfl``/``.hdr`` optional),
    non-Cartesian with the ``trajectory`` array, scored against ``reference`` ``(H, W)`` (else
    a labelled stand-in; module docstring). ``pixel_size_cm`` only sets the NIfTI spacing.

    InputError (naming the file) for a missing or malformed file, k-space whose coils or
    ``(H, W)`` differ from the maps', a trajectory whose samples and spokes differ from the
    k-space's, or a reference of another size than the maps.
    """
    coil_maps = _read(maps, from_bart_coils)
    coils, shape = coil_maps.shape[0], tuple(coil_maps.shape[-2:])
    traj = None
    if trajectory is None:
        data = _read(kspace, from_bart_coils)
        if tuple(data.shape[-2:]) != shape:
            raise InputError(kspace, f"Cartesian k-space is {tuple(data.shape[-2:])} (H, W) but the maps "
                                     f"{maps} are {shape}")
    else:
        data = _read(kspace, kspace_from_bart_noncart)
        traj = _read(trajectory, trajectory_from_bart, shape)
        if tuple(traj.shape[:2]) != tuple(data.shape[1:]):
            raise InputError(trajectory, f"has {traj.shape[1]} samples x {traj.shape[0]} spokes but the k-space "
                                         f"{kspace} has {data.shape[2]} samples x {data.shape[1]} spokes")
    if data.shape[0] != coils:
        raise InputError(kspace, f"has {data.shape[0]} coils but the maps {maps} have {coils}")
    name, units = str(kspace), "a.u."
    if reference is not None:
        image = _read(reference, from_bart_image)
        if tuple(image.shape) != shape:
            raise InputError(reference, f"is {tuple(image.shape)} but the maps {maps} are {shape}")
        if not bool(image.imag.any()):
            image = image.real.contiguous()  # a magnitude reference (e.g. an RSS image) stays real
        image = image[None, None]
    else:
        image = _stand_in(data, traj, shape)
        name, units = f"{kspace} ({NO_REFERENCE})", f"a.u. ({NO_REFERENCE})"
    mask = sampling_mask(data) if traj is None else None
    return BartScan(image=image, pixel_size_cm=float(pixel_size_cm), name=name, maps=coil_maps,
                    kspace=data[None], mask=mask, trajectory=traj, units=units)
