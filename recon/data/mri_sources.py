"""Multi-coil MRI data sources, and the SENSE operator factory that pairs with them.

Sources (``data`` config node) return an :class:`MRISlice` (the protocol of
:mod:`recon.data.sources`):

* :func:`mni152_slice`: a slice of the bundled held-out slab of the MNI152 T1 template
  (``mni152_heldout_slab.npz``: template axial slices 110-145, never used to train MRI priors;
  ``data_scripts/make_mri_slab.py``), resampled to ``size`` x ``size`` over the template's
  233 mm, with a smooth random phase; its k-space is simulated with birdcage coil maps.
* :func:`complex_image`: one image of a complex ``.npy`` stack (e.g. training slices, for
  tuning), simulated with birdcage coil maps.
* :func:`fastmri_slice`: one slice of a fastMRI multi-coil HDF5 file; the measurement is the
  file's own k-space under the configured mask (its own noise: the ``noise`` node is not
  applied) and the truth is the fully sampled RSS image.

Images are in the scale of the orthonormal ``ifft2c`` of the k-space (arbitrary units; the
template's maximum is 1). The operator (:func:`sense_operator`) uses the simulation's true maps
when the source has them, else ESPIRiT maps from the fully sampled centre of the *undersampled*
k-space, as a real reconstruction would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from operators import MultiCoilMRI, birdcage_maps, espirit_maps, fft2c, ifft2c, make_mask
from ..errors import ConfigError, InputError
from ..io.fastmri import center_crop, read_fastmri, rss
from .sources import accepted_inputs

__all__ = ["MRISlice", "build_mask", "centre_block", "complex_image", "espirit_batch", "fastmri_slice", "mni152_slice",
           "regrid", "sense_operator", "template_image"]

SLAB_FILE = Path(__file__).with_name("mni152_heldout_slab.npz")
TEMPLATE_FOV_MM = 233.0  # the template's anterior-posterior extent, mapped onto the image width


@dataclass
class MRISlice:
    """One MRI ground truth and what the operator factory needs to measure it.

    ``image``: ``(1, 1, H, W)`` complex64 (simulated) or float32 RSS magnitude (fastMRI).
    ``maps``: the simulation's true coil maps ``(C, H, W)`` complex64, else None.
    ``kspace``: a measured, fully sampled k-space ``(1, C, H, W)`` complex64, else None.
    """

    image: Tensor
    pixel_size_cm: float
    name: str
    maps: Tensor | None = None
    kspace: Tensor | None = None
    units: str = "a.u."

    def to(self, device: torch.device) -> "MRISlice":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return replace(self, image=self.image.to(device), maps=move(self.maps), kspace=move(self.kspace))

    def operator_inputs(self, factory: Callable[..., Any] | None = None) -> dict[str, Any]:
        """``shape`` (H, W) and the ``maps`` or ``kspace`` that :func:`sense_operator` takes: those
        of them that ``factory`` takes (:func:`recon.data.sources.accepted_inputs`; all without one)."""
        inputs = {"shape": tuple(self.image.shape[-2:]), "maps": self.maps, "kspace": self.kspace}
        return accepted_inputs(inputs, factory)

    def measure(self, physics: MultiCoilMRI, noise: Any, generator: torch.Generator) -> Tensor:
        """Masked k-space ``(1, C, H, W)``: the measured k-space under the mask, or the simulated
        ``M (A x + n)`` (noise only where sampled); for an operator without a mask (non-Cartesian,
        :func:`recon.data.noncartesian.noncartesian_operator`) the simulated ``A x + n``."""
        mask = getattr(physics, "mask", None)
        if mask is None:
            return noise(physics(self.image), generator=generator)
        if self.kspace is not None:
            return mask * self.kspace
        return mask * noise(physics(self.image), generator=generator)


def _smooth_phase(shape: Sequence[int], seed: int) -> np.ndarray:
    """A random quadratic phase map (H, W) in radians: offset U(-pi, pi), other terms N(0, 0.5)."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    terms = np.stack([x, y, x * y, x**2, y**2])
    return rng.uniform(-math.pi, math.pi) + np.tensordot(rng.normal(0, 0.5, len(terms)), terms, axes=1)


def template_image(magnitude: np.ndarray, size: int, phase_seed: int) -> np.ndarray:
    """A display-oriented template slice (h, w) in [0, 1] (1 mm pixels) as a complex64
    ``(size, size)`` image: centred on a square, resampled so the template's 233 mm span the
    width (linear interpolation, Gaussian anti-aliasing when shrinking), times a smooth phase."""
    from scipy import ndimage

    h, w = magnitude.shape
    n = max(h, w)
    square = np.zeros((n, n), dtype=np.float32)
    square[(n - h) // 2 : (n - h) // 2 + h, (n - w) // 2 : (n - w) // 2 + w] = magnitude
    zoom = size / n
    if zoom < 1:
        square = ndimage.gaussian_filter(square, 0.5 / zoom)
    out = np.clip(ndimage.zoom(square, zoom, order=1, grid_mode=True, mode="grid-constant"), 0, None)
    return (out * np.exp(1j * _smooth_phase(out.shape, phase_seed))).astype(np.complex64)


def mni152_slice(index: int = 0, size: int = 256, phase_seed: int = 0, coils: int = 8,
                 relative_radius: float = 1.5) -> MRISlice:
    """Slice ``index`` (0-7: template axial slices 110, 115, ..., 145) of the held-out slab as a
    complex ``(1, 1, size, size)`` image (pixels of ``233 / size`` mm), with ``coils`` birdcage
    maps (:func:`operators.birdcage_maps`, coils on a circle of ``relative_radius`` half-FOVs)."""
    with np.load(SLAB_FILE) as slab:
        slices, template_index = slab["slices"], slab["template_index"]
    if not 0 <= index < len(slices):
        raise ConfigError(f"data.index={index}: the held-out slab has slices 0-{len(slices) - 1}")
    if size < 16 or coils < 1:
        raise ConfigError(f"data: need size >= 16 and coils >= 1, got size={size}, coils={coils}")
    image = template_image(slices[index].astype(np.float32) / 255, size, phase_seed)
    return MRISlice(
        image=torch.from_numpy(image)[None, None],
        pixel_size_cm=TEMPLATE_FOV_MM / 10 / size,
        name=f"mni152-heldout-z{int(template_index[index])}",
        maps=birdcage_maps(coils, (size, size), relative_radius),
    )


def complex_image(path: str, index: int = 0, coils: int = 8, relative_radius: float = 1.5,
                  pixel_size_cm: float = 0.1) -> MRISlice:
    """Image ``index`` of a ``(N, 1, H, W)`` complex ``.npy`` stack (for instance the output of
    ``data_scripts/make_mri_training_set.py``, used to tune samplers on training slices) as
    the truth of a simulated scan with ``coils`` birdcage maps."""
    from ..io.images import load_npy_images

    images = load_npy_images(Path(path))
    if not images.is_complex() or images.shape[1] != 1:
        raise InputError(path, f"expected complex (N, 1, H, W) images, got {tuple(images.shape)} {images.dtype}")
    if not 0 <= index < len(images):
        raise ConfigError(f"data.index={index}: {path} holds images 0-{len(images) - 1}")
    image = images[index : index + 1]
    return MRISlice(image=image, pixel_size_cm=pixel_size_cm, name=f"{Path(path).stem}-{index}",
                    maps=birdcage_maps(coils, tuple(image.shape[-2:]), relative_radius))


def regrid(kspace: Tensor, shape: Sequence[int]) -> Tensor:
    """k-space ``(..., H, W)`` of the centre-cropped ``(h, w)`` field of view: ``fft2c`` of the
    cropped ``ifft2c`` image. Removing the readout (H) oversampling this way commutes with a
    column mask; the image values (``ifft2c`` scale) are unchanged inside the crop."""
    if tuple(shape) == tuple(kspace.shape[-2:]):
        return kspace
    return fft2c(center_crop(ifft2c(kspace), shape))


def fastmri_slice(path: str, slice: int | None = None, pixel_size_cm: float | None = None) -> MRISlice:
    """Slice ``slice`` (default: the middle one) of a fastMRI multi-coil file.

    The k-space is re-gridded (:func:`regrid`) to the header's recon size (fastMRI's 320 x 320
    without a header), so the truth, the RSS of the fully sampled coil images, equals the file's
    ``reconstruction_rss`` slice. ``pixel_size_cm`` defaults to the header's recon field of view
    over the image width (0.1 cm without one); it only sets the NIfTI spacing.
    """
    volume = read_fastmri(path)
    index = volume.num_slices // 2 if slice is None else int(slice)
    if not 0 <= index < volume.num_slices:
        raise ConfigError(f"data.slice={index}: {path} has slices 0-{volume.num_slices - 1}")
    rows, cols = volume.kspace_shape[-2:]
    shape = (min(volume.crop_size[0], rows), min(volume.crop_size[1], cols))
    kspace = regrid(torch.from_numpy(volume.kspace(index)), shape)
    truth = rss(ifft2c(kspace), dim=0).to(torch.float32)
    if pixel_size_cm is None:
        fov = volume.recon_fov_mm
        pixel_size_cm = fov / 10 / shape[1] if fov else 0.1
    return MRISlice(image=truth[None, None], pixel_size_cm=float(pixel_size_cm),
                    name=f"{volume.path.name}[{index}]", kspace=kspace[None])


def build_mask(spec: Mapping[str, Any] | Tensor, shape: Sequence[int]) -> Tensor:
    """The float32 0/1 mask for k-space ``shape = (H, W)``: ``(W,)`` or ``(H, W)``.

    ``spec`` is the ``mask`` config node (``kind``, ``acceleration``, ``center_fraction``,
    ``seed``; :func:`operators.make_mask`) or a ready mask tensor (e.g. a fastMRI test file's).
    """
    if isinstance(spec, Tensor):
        return spec.to(torch.float32)
    try:
        return make_mask(str(spec["kind"]), shape, float(spec["acceleration"]), spec.get("center_fraction"),
                         int(spec.get("seed", 0))).mask
    except ValueError as err:
        raise ConfigError(f"mask: {err}") from None


def centre_block(mask: Tensor, shape: Sequence[int]) -> int:
    """Side of the largest fully sampled centred square of ``mask`` broadcast to ``shape``,
    placed as ESPIRiT extracts its calibration region (rows ``H // 2 - n // 2`` onwards)."""
    full = torch.broadcast_to(mask, tuple(shape)) > 0
    height, width = full.shape
    n = 0
    while n < min(height, width):
        m = n + 1
        top, left = height // 2 - m // 2, width // 2 - m // 2
        if not bool(full[top : top + m, left : left + m].all()):
            break
        n = m
    return n


def espirit_batch(kspace: Tensor, mask: Tensor, calib_width: int = 24, kernel_width: int = 6,
                  threshold: float = 0.02, crop: float = 0.95) -> Tensor:
    """ESPIRiT maps ``(B, C, H, W)`` complex64 (CPU) for masked k-space ``(B, C, H, W)``.

    The calibration width is ``min(calib_width, n)`` with ``n`` the fully sampled centre
    (:func:`centre_block`); ValueError if that is not larger than ``kernel_width`` (raise the
    mask's ``center_fraction`` or lower ``operator.kernel_width``).
    """
    width = min(int(calib_width), centre_block(mask, kspace.shape[-2:]))
    if width <= kernel_width:
        raise ValueError(f"the fully sampled k-space centre is {width} x {width}: too small for ESPIRiT "
                         f"with kernel_width {kernel_width} (raise mask.center_fraction)")
    return torch.stack([espirit_maps(k, calib_width=width, thresh=threshold, kernel_width=kernel_width, crop=crop)
                        for k in kspace])


def sense_operator(shape: Sequence[int], mask: Mapping[str, Any] | Tensor, maps: Tensor | None = None,
                   kspace: Tensor | None = None, calib_width: int = 24, kernel_width: int = 6,
                   threshold: float = 0.02, crop: float = 0.95) -> MultiCoilMRI:
    """Config factory: :class:`operators.MultiCoilMRI` for images ``shape = (H, W)``.

    ``mask``: the ``mask`` config node or a mask tensor (:func:`build_mask`). Maps: ``maps``
    (a simulation's true maps, ``(C, H, W)`` or ``(B, C, H, W)``) when given, else ESPIRiT
    (:func:`espirit_batch`, parameters as in ``sigpy.mri.app.EspiritCalib``) from the masked
    ``kspace`` ``(B, C, H, W)``: only its fully sampled centre is used.
    """
    sampled = build_mask(mask, shape)
    if maps is None:
        if kspace is None:
            raise ConfigError("operator: the data gave neither coil maps nor k-space to estimate them from")
        try:
            maps = espirit_batch(sampled.to(kspace.device) * kspace, sampled, calib_width, kernel_width,
                                 threshold, crop)
        except ValueError as err:
            raise ConfigError(f"operator: {err}") from None
    return MultiCoilMRI(maps, sampled)
