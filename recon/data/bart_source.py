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
    maps: Tensor | None
    kspace: Tensor
    mask: Tensor | None = None
    trajectory: Tensor | None = None
    units: str = "a.u."

    def to(self, device: torch.device) -> BartScan:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return replace(self, image=self.image.to(device), maps=move(self.maps), kspace=self.kspace.to(device),
                       mask=move(self.mask), trajectory=move(self.trajectory))

    def operator_inputs(self, factory: Callable[..., Any] | None = None) -> dict[str, Any]:
        """``shape`` (H, W), ``maps`` (or, without maps, the scan's ``kspace`` for the operator factory
        to estimate them from its centre by ESPIRiT) and ``mask`` (Cartesian) or
        ``measured_trajectory``: those that ``factory`` takes (:func:`recon.data.sources.accepted_inputs`)."""
        inputs: dict[str, Any] = {"shape": tuple(self.image.shape[-2:])}
        inputs.update({"maps": self.maps} if self.maps is not None else {"kspace": self.kspace})
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


def _image_size(maps: Tensor | None, reference: Tensor | None, shape: list[int] | None, kspace: str) -> tuple[int, int]:
    """``(H, W)`` of a non-Cartesian scan: the maps', else the reference's, else ``shape``."""
    for source in (maps, reference):
        if source is not None:
            return tuple(source.shape[-2:])
    if shape is None or len(shape) != 2 or min(int(n) for n in shape) < 8:
        raise ConfigError(f"data=bart: the non-Cartesian scan {kspace} has no coil maps and no reference to take the "
                          f"image size from; set data.shape=[H,W] (got {shape})")
    return int(shape[0]), int(shape[1])


def bart_scan(kspace: str, maps: str | None = None, trajectory: str | None = None, reference: str | None = None,
              pixel_size_cm: float = 0.1, shape: list[int] | None = None) -> BartScan:
    """The scan of the BART arrays ``kspace`` and ``maps`` (base paths, ``.cfl``/``.hdr`` optional),
    non-Cartesian with the ``trajectory`` array, scored against ``reference`` ``(H, W)`` (else
    a labelled stand-in; module docstring). ``pixel_size_cm`` only sets the NIfTI spacing.
    Without ``maps`` the operator estimates them from the scan's own centre (ESPIRiT); the image
    size then comes from the Cartesian k-space, or, for non-Cartesian scans, from ``shape``
    ``[H, W]`` or the reference.

    InputError (naming the file) for a missing or malformed file, k-space whose coils or
    ``(H, W)`` differ from the maps', a trajectory whose samples and spokes differ from the
    k-space's, or a reference of another size than the maps.
    """
    coil_maps = None if maps is None else _read(maps, from_bart_coils)
    ref = None if reference is None else _read(reference, from_bart_image)
    traj = None
    if trajectory is None:
        data = _read(kspace, from_bart_coils)
        size = tuple(data.shape[-2:])
    else:
        data = _read(kspace, kspace_from_bart_noncart)
        size = _image_size(coil_maps, ref, shape, kspace)
        traj = _read(trajectory, trajectory_from_bart, size)
        if tuple(traj.shape[:2]) != tuple(data.shape[1:]):
            raise InputError(trajectory, f"has {traj.shape[1]} samples x {traj.shape[0]} spokes but the k-space "
                                         f"{kspace} has {data.shape[2]} samples x {data.shape[1]} spokes")
    coils = data.shape[0] if coil_maps is None else coil_maps.shape[0]
    shape = size if coil_maps is None else tuple(coil_maps.shape[-2:])
    if trajectory is None and size != shape:
        raise InputError(kspace, f"Cartesian k-space is {size} (H, W) but the maps {maps} are {shape}")
    if data.shape[0] != coils:
        raise InputError(kspace, f"has {data.shape[0]} coils but the maps {maps} have {coils}")
    name, units = str(kspace), "a.u."
    if ref is not None:
        image = ref
        if tuple(image.shape) != shape:
            raise InputError(reference, f"is {tuple(image.shape)} but the scan's images are {shape}")
        if not bool(image.imag.any()):
            image = image.real.contiguous()  # a magnitude reference (e.g. an RSS image) stays real
        image = image[None, None]
    else:
        image = _stand_in(data, traj, shape)
        name, units = f"{kspace} ({NO_REFERENCE})", f"a.u. ({NO_REFERENCE})"
    mask = sampling_mask(data) if traj is None else None
    return BartScan(image=image, pixel_size_cm=float(pixel_size_cm), name=name, maps=coil_maps,
                    kspace=data[None], mask=mask, trajectory=traj, units=units)
