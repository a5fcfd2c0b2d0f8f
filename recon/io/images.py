"""Read CT images from ``.npy``, NIfTI, a DICOM file or a DICOM series folder, with their pixel
spacing; write NIfTI atomically.

Images are returned as float32 (H, W) in radiological display orientation: row 0 at the top
(anterior for axial slices), column 0 at the left of the screen (the patient's right). CT
values are linear attenuation coefficients mu in 1/cm; Hounsfield units convert as
mu = MU_WATER * (1 + HU / 1000), clipped at 0 (:data:`operators.ct.MU_WATER`).
:func:`read_slice` and :func:`read_volume` also return the spacing the file records (DICOM
PixelSpacing and slice positions, NIfTI zooms in the header's units) or None when it records
none (``.npy``); :func:`load_image` and :func:`load_volume` are their plain-array forms. DICOM
reading is :mod:`recon.io.dicom_read`.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from operators.ct import MU_WATER

from ..errors import InputError
from .atomic import atomic_write, save_npy
from .dicom_read import (HU_AIR, DicomGeometry, checked_pixels, is_dicom_file, one_line, pick_slice, read_dicom_file,
                         read_dicom_series)

__all__ = ["HU_AIR", "UNITS", "ScannedImage", "hu_to_mu", "load_image", "load_volume", "read_slice",
           "read_volume", "save_nifti", "save_npy"]

UNITS = ("attenuation", "hu")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_NIFTI_UNIT_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """Hounsfield units to attenuation, 1/cm: MU_WATER * (1 + HU / 1000), clipped at >= 0."""
    return np.clip(MU_WATER * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0, None)


@dataclass(frozen=True)
class ScannedImage:
    """An image read from a file: ``image`` float32 ``(H, W)`` or ``(D, H, W)``; ``spacing_mm``
    the ``(row, column)`` pixel spacing in mm, None when the file records none; ``slice_mm`` the
    distance between a volume's slices in mm (None for a 2D image or when the file records none);
    ``dicom`` the source's geometry when it was DICOM (else None)."""

    image: np.ndarray
    spacing_mm: tuple[float, float] | None
    slice_mm: float | None = None
    dicom: DicomGeometry | None = None


def read_slice(path: str | os.PathLike[str], *, slice_index: int | None = None,
               units: str = "attenuation") -> ScannedImage:
    """Read a 2D image, float32 (H, W), in attenuation units (1/cm) for CT, with its spacing.

    - ``.npy``: leading singleton axes are dropped; a remaining 3D array (D, H, W) gives slice
      ``slice_index`` of its first axis (default the middle one). No spacing.
    - ``.nii`` / ``.nii.gz``: reoriented to RAS; a 3D volume gives the axial slice
      ``slice_index`` counted from inferior to superior (default the middle one), displayed
      radiologically (anterior up, patient's right on the left). Spacing from the zooms in the
      header's spatial unit (mm, m or micron; a header without a unit is taken as mm, except an
      identity-like one whose zooms are all 1, which records no spacing).
    - DICOM CT (``.dcm``, ``.dicom``, ``.ima`` or any file with the DICOM preamble): stored
      values are rescaled to HU; padding pixels (PixelPaddingValue) and values below -1024 HU
      are set to air (-1000 HU); then HU are converted to attenuation. Pixels keep the stored
      row/column order (DICOM's display order); multi-frame files give frame ``slice_index``
      (default the middle one). Spacing from PixelSpacing.
    - A folder holding one DICOM CT series: slice ``slice_index`` in the order along the slice
      normal (default the middle one), read as a DICOM file (:mod:`recon.io.dicom_read`).

    ``units`` says what ``.npy`` / NIfTI values are: ``"attenuation"`` (1/cm, returned as is)
    or ``"hu"`` (converted like DICOM). Any problem with the file raises :class:`InputError`.
    """
    path = _existing(path, units)
    name = path.name.lower()
    if path.is_dir():
        hu, geometry = read_dicom_series(path, slice_index, whole=False)
        return ScannedImage(_mu(hu), geometry.pixel_spacing_mm, None, geometry)
    if name.endswith(".npy"):
        return ScannedImage(_units(_read_npy(path, slice_index), units), None)
    if name.endswith((".nii", ".nii.gz")):
        image, spacing = _read_nifti(path, slice_index)
        return ScannedImage(_units(image, units), spacing)
    if name.endswith(_DICOM_SUFFIXES) or is_dicom_file(path):
        hu, geometry = read_dicom_file(path, slice_index)
        return ScannedImage(_mu(hu), geometry.pixel_spacing_mm, None, geometry)
    raise InputError(path, "unknown file type; expected .npy, .nii, .nii.gz, a DICOM file or a DICOM series folder")


def load_image(path: str | os.PathLike[str], *, slice_index: int | None = None,
               units: str = "attenuation") -> np.ndarray:
    """The image of :func:`read_slice` alone, float32 (H, W)."""
    return read_slice(path, slice_index=slice_index, units=units).image


def read_volume(path: str | os.PathLike[str], *, units: str = "attenuation") -> ScannedImage:
    """Read a volume of display-oriented slices, float32 ``(D, H, W)``, with its spacing.

    - A folder holding one DICOM CT series: slices sorted along the slice normal (inferior to
      superior for axial slices), rows and columns as stored, HU converted to 1/cm; spacing from
      PixelSpacing and the slice positions (:mod:`recon.io.dicom_read`).
    - NIfTI: axial slices from inferior to superior, rows anterior to posterior, columns from the
      patient's right to left (the inverse of :func:`save_nifti`); spacing from the zooms as in
      :func:`read_slice`.
    - ``.npy`` ``(D, H, W)`` (leading singleton axes dropped): no spacing.

    ``units`` as in :func:`read_slice`.
    """
    path = _existing(path, units)
    name = path.name.lower()
    if path.is_dir():
        hu, geometry = read_dicom_series(path)
        return ScannedImage(_mu(hu), geometry.pixel_spacing_mm, geometry.slice_spacing_mm(), geometry)
    if name.endswith(".npy"):
        array = _read_npy(path, None, volume=True)
        return ScannedImage(_units(array, units), None)
    if name.endswith((".nii", ".nii.gz")):
        volume, zooms, known = _read_nifti_volume(path)
        spacing = (zooms[1], zooms[0]) if known else None
        return ScannedImage(_units(volume, units), spacing, zooms[2] if known else None)
    if name.endswith(_DICOM_SUFFIXES) or is_dicom_file(path):
        raise InputError(path, "a DICOM volume is a series: give the folder that holds its slice files")
    raise InputError(path, "unknown file type; expected a DICOM series folder, .nii, .nii.gz or .npy")


def load_volume(path: str | os.PathLike[str], units: str = "attenuation") -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a NIfTI volume as display-oriented axial slices, float32 ``(D, H, W)`` (inferior to
    superior; rows anterior to posterior, columns from the patient's right to left), and its
    spacing (column, row, slice) in mm (the zooms as stored when the header names no unit): the
    inverse of :func:`save_nifti`. ``units="hu"`` converts Hounsfield units to attenuation (1/cm)."""
    path = _existing(path, units)
    if not path.is_file() or not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(path, "expected a NIfTI volume (.nii or .nii.gz)")
    volume, zooms, _ = _read_nifti_volume(path)
    return _units(volume, units), zooms


def _existing(path: str | os.PathLike[str], units: str) -> Path:
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r}; valid units: {', '.join(UNITS)}")
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if not (path.is_file() or path.is_dir()):
        raise InputError(path, "not a regular file or folder")
    return path


def _units(image: np.ndarray, units: str) -> np.ndarray:
    return _mu(image) if units == "hu" else image.astype(np.float32)


def _mu(hu: np.ndarray) -> np.ndarray:
    return hu_to_mu(hu).astype(np.float32)


def _nifti_mm_per_unit(path: Path, image: nib.Nifti1Image, zooms: tuple[float, ...]) -> float | None:
    """Millimetres per header spatial unit; None when the header names no unit and every spatial
    zoom is 1 (the identity affine of an array saved without spacing)."""
    unit = image.header.get_xyzt_units()[0]
    if unit in _NIFTI_UNIT_MM:
        return _NIFTI_UNIT_MM[unit]
    return None if all(z == 1.0 for z in zooms) else 1.0


def _read_nifti_volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    """Display-oriented ``(D, H, W)`` volume, its (column, row, slice) spacing in mm (raw zooms
    when unknown) and whether the header records the spacing."""
    try:
        image = _load_nifti_checked(path)
        image = nib.as_closest_canonical(image)
        data = np.asarray(image.dataobj, dtype=np.float32)
        zooms = tuple(float(v) for v in image.header.get_zooms()[:3])
    except InputError:
        raise
    except Exception as exc:  # nibabel and numpy raise many types for corrupt files and affines
        raise InputError(path, f"cannot read NIfTI file: {one_line(exc)}") from exc
    data = data.reshape(data.shape[:3]) if data.ndim > 3 and all(n == 1 for n in data.shape[3:]) else data
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(path, "volume holds NaN or Inf")
    if len(zooms) < 3 or not all(np.isfinite(v) and v > 0 for v in zooms):
        raise InputError(path, f"voxel spacing must be three positive finite numbers, got {zooms}")
    scale = _nifti_mm_per_unit(path, image, zooms)
    zooms = tuple(z * (scale or 1.0) for z in zooms)
    display = np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))
    return display, zooms, scale is not None


def save_nifti(path: str | os.PathLike[str], array: np.ndarray,
               spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    """Write a display-oriented (H, W) image or (D, H, W) stack of axial slices as NIfTI, atomically.

    ``spacing`` is (column, row, slice) in mm. The file is float32 and reads back identically
    with :func:`load_image`; ``.nii.gz`` names are gzip-compressed.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(path, "expected a .nii or .nii.gz file name")
    data = np.asarray(array, dtype=np.float32)
    if data.ndim not in (2, 3):
        raise InputError(path, f"expected an (H, W) image or (D, H, W) stack to save, got shape {data.shape}")
    # Stored axes (x, y, z) = (column, row, slice); columns run to the patient's left and rows to
    # posterior, so the x and y spacings are negative in the RAS affine.
    volume = (data[None] if data.ndim == 2 else data).transpose(2, 1, 0)
    affine = np.diag([-float(spacing[0]), -float(spacing[1]), float(spacing[2]), 1.0])
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    content = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    with atomic_write(path, "wb") as handle:
        handle.write(content)


def _npy_declared_fits(path: Path, handle) -> None:
    """Check the ``.npy`` header's shape and dtype against the file's size before numpy allocates."""
    version = np.lib.format.read_magic(handle)
    fmt = np.lib.format
    shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(handle)
    if any(int(n) < 0 for n in shape):
        raise InputError(path, f"negative dimension in the .npy header shape {shape}")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = path.stat().st_size - handle.tell()
    if declared > available:
        raise InputError(path, f"header declares shape {shape} of {dtype} ({declared} bytes) but only "
                               f"{available} bytes of data follow (truncated or corrupt)")
    handle.seek(0)


def _read_npy(path: Path, slice_index: int | None, volume: bool = False) -> np.ndarray:
    """A 2D image (slice ``slice_index`` of a 3D array), or the 3D array itself when ``volume``."""
    try:
        with open(path, "rb") as handle:
            if handle.read(6) != b"\x93NUMPY":
                raise InputError(path, "not a .npy file (no NUMPY header)")
            handle.seek(0)
            _npy_declared_fits(path, handle)
            array = np.load(handle, allow_pickle=False)
    except InputError:
        raise
    except Exception as exc:  # numpy raises many types (ValueError, SyntaxError, TokenError...) for bad headers
        raise InputError(path, f"cannot read .npy file: {one_line(exc)}") from exc
    shape = array.shape
    while array.ndim > (3 if volume else 2) and array.shape[0] == 1:
        array = array[0]
    if volume:
        if array.ndim != 3:
            raise InputError(path, f"expected a 3D (D, H, W) volume, got shape {shape}")
        return checked_pixels(path, array)
    if array.ndim == 3:
        array = array[pick_slice(path, array.shape[0], slice_index)]
    elif array.ndim == 2 and slice_index is not None:
        raise InputError(path, f"slice_index given but the image is 2D (shape {shape})")
    if array.ndim != 2:
        raise InputError(path, f"expected a 2D image or a 3D (D, H, W) volume, got shape {shape}")
    return checked_pixels(path, array)


def _load_nifti_checked(path: Path) -> nib.Nifti1Image:
    """``nib.load(path)`` after checking that the declared data fits the file (a corrupt header
    must not make nibabel allocate gigabytes): at most the file's bytes for ``.nii``, at most
    deflate's maximum ratio (1032:1) of them for ``.nii.gz``."""
    image = nib.load(path)
    header = image.header
    declared = int(np.prod([int(n) for n in image.shape], dtype=object)) * header.get_data_dtype().itemsize
    size = path.stat().st_size
    limit = size * 1032 + 2**20 if path.name.lower().endswith(".gz") else size - int(header.get_data_offset())
    if declared > limit:
        raise InputError(path, f"header declares shape {image.shape} of {header.get_data_dtype()} "
                               f"({declared} bytes), more than the file can hold (truncated or corrupt)")
    return image


def _read_nifti(path: Path, slice_index: int | None) -> tuple[np.ndarray, tuple[float, float] | None]:
    try:
        return _read_nifti_slice(path, slice_index)
    except InputError:
        raise
    except Exception as exc:  # nibabel and numpy raise many types for corrupt files and affines
        raise InputError(path, f"cannot read NIfTI file: {one_line(exc)}") from exc


def _read_nifti_slice(path: Path, slice_index: int | None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The display-oriented slice and its (row, column) spacing in mm (None when unrecorded)."""
    image = _load_nifti_checked(path)
    shape = image.shape
    if len(shape) < 2 or (len(shape) > 3 and any(n != 1 for n in shape[3:])):
        raise InputError(path, f"expected a 2D image or a 3D volume, got shape {shape}")
    ornt = io_orientation(image.affine)  # per stored axis: (RAS axis, direction)
    if np.isnan(ornt).any():
        raise InputError(path, "degenerate affine: cannot orient the image")
    if len(shape) == 2:
        if slice_index is not None:
            raise InputError(path, f"slice_index given but the image is 2D (shape {shape})")
        cut_axis, index = 2, 0
    else:
        cut_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])  # stored axis along inferior-superior
        index = pick_slice(path, shape[cut_axis], slice_index)
        if ornt[cut_axis, 1] < 0:  # stored from superior to inferior
            index = shape[cut_axis] - 1 - index
    selection = [slice(None)] * 3
    selection[cut_axis] = slice(index, index + 1)
    try:
        slab = np.asanyarray(image.dataobj[tuple(selection[: len(shape)]) + (0,) * (len(shape) - 3)])
    except Exception as exc:  # truncated or corrupt data
        raise InputError(path, f"cannot read NIfTI data: {one_line(exc)}") from exc
    if slab.ndim == 2:
        slab = slab[:, :, None]
    ras = apply_orientation(slab, ornt_transform(ornt, axcodes2ornt("RAS")))
    plane = np.take(ras, 0, axis=int(ornt[cut_axis, 0]))
    # (right, anterior) or other in-plane RAS axes to display rows (anterior / superior at the
    # top) and columns (patient's right, or anterior, on the left).
    return checked_pixels(path, plane[::-1, ::-1].T), _nifti_plane_spacing(path, image, ornt, int(ornt[cut_axis, 0]))


def _nifti_plane_spacing(path: Path, image: nib.Nifti1Image, ornt: np.ndarray,
                         cut_ras: int) -> tuple[float, float] | None:
    """(row, column) spacing in mm of the display plane that leaves out RAS axis ``cut_ras``."""
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    zooms += (1.0,) * (3 - len(zooms))  # a 2D image has no slice zoom
    col_ras, row_ras = sorted({0, 1, 2} - {cut_ras})
    stored = {int(ras): axis for axis, ras in enumerate(ornt[:, 0])}
    if row_ras not in stored or col_ras not in stored:
        return None
    row, col = zooms[stored[row_ras]], zooms[stored[col_ras]]
    if not all(np.isfinite(v) and v > 0 for v in (row, col)):
        raise InputError(path, f"pixel spacing must be positive finite numbers, got zooms {zooms}")
    scale = _nifti_mm_per_unit(path, image, zooms)
    return None if scale is None else (row * scale, col * scale)


def load_npy_images(path: Path) -> torch.Tensor:
    """``(N, C, H, W)`` float32 or complex64 images from a ``.npy`` file (training and
    evaluation stacks), checked; any problem raises :class:`InputError`."""
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read .npy ({err})") from None
    if array.ndim != 4:
        raise InputError(path, f"expected (N, C, H, W) images, got shape {array.shape}")
    dtype = np.complex64 if np.iscomplexobj(array) else np.float32
    images = torch.from_numpy(np.array(array, dtype=dtype))  # a writable copy of the memory map
    if not torch.isfinite(torch.view_as_real(images) if images.is_complex() else images).all():
        raise InputError(path, "images hold NaN or Inf")
    return images
