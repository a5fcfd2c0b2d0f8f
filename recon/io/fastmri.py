"""fastMRI multi-coil HDF5 files: lazy reading, and writing reconstructions in the submission layout.

Input schema (fastMRI): ``kspace`` complex (slices, coils, H, W) with H the readout (2x
oversampled for brain: 640 for a 320 x 320 image) and W the phase encodes, in the centred layout
of :func:`operators.mri.fft2c`; optional ``mask`` (W,) (test sets), ``reconstruction_rss``
(slices, h, w) float target, ``ismrmrd_header`` XML, and attributes such as ``acquisition``,
``max``, ``norm``, ``patient_id``. The header's ``matrixSize`` x is along H and y along W.

Output (fastMRI leaderboard layout): ``reconstruction`` float32 magnitude (slices, h, w)
centre-cropped to the recon size, plus the ``mask`` used and attributes ``method``,
``acceleration``, ``center_fraction``.
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
import torch

from ..errors import InputError
from .atomic import atomic_write
from .guard import guarded

__all__ = [
    "DEFAULT_CROP",
    "FastMRIVolume",
    "center_crop",
    "ismrmrd_header",
    "read_fastmri",
    "rss",
    "write_h5",
    "write_reconstruction",
]

DEFAULT_CROP = (320, 320)
MAX_SLICE_VALUES = 2**28  # values per slice (2 GiB of complex64): a corrupt header must not allocate more  # fastMRI's image size when the header gives none
ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"

Array = TypeVar("Array")


def center_crop(data: Array, shape: Sequence[int]) -> Array:
    """fastMRI's centre crop of the last two dims to ``shape = (h, w)`` (numpy or torch).

    The crop starts at ``(n - m) // 2`` along each axis; ValueError if ``shape`` is larger.
    """
    h, w = (int(n) for n in shape)
    rows, cols = data.shape[-2], data.shape[-1]
    if not (0 < h <= rows and 0 < w <= cols):
        raise ValueError(f"cannot crop ({rows}, {cols}) to ({h}, {w})")
    top, left = (rows - h) // 2, (cols - w) // 2
    return data[..., top : top + h, left : left + w]


def rss(data: Array, dim: int = 0) -> Array:
    """Root-sum-of-squares ``sqrt(sum |x|^2)`` over the coil axis ``dim`` (numpy or torch, any dtype)."""
    return (abs(data) ** 2).sum(dim) ** 0.5


def ismrmrd_header(encoding_size: Sequence[int], recon_size: Sequence[int],
                   fov_mm: Sequence[float] | None = None) -> bytes:
    """A minimal ISMRMRD header with the fields fastMRI reads: encoded/recon ``matrixSize``
    ``(x, y, z)`` (x along H, y along W), field of view in mm, and the phase-encode limits
    (all W lines, centre ``W // 2``)."""
    fov = tuple(float(v) for v in (fov_mm or (*recon_size[:2], 1.0)))
    enc_fov = (fov[0] * encoding_size[0] / recon_size[0], fov[1] * encoding_size[1] / recon_size[1], fov[2])
    root = ET.Element("ismrmrdHeader", xmlns=ISMRMRD_NS)
    encoding = ET.SubElement(root, "encoding")
    for tag, size, mm in (("encodedSpace", encoding_size, enc_fov), ("reconSpace", recon_size, fov)):
        space = ET.SubElement(encoding, tag)
        for group, values in (("matrixSize", size), ("fieldOfView_mm", mm)):
            node = ET.SubElement(space, group)
            for axis, value in zip("xyz", values):
                ET.SubElement(node, axis).text = str(value)
    step = ET.SubElement(ET.SubElement(encoding, "encodingLimits"), "kspace_encoding_step_1")
    for tag, value in (("minimum", 0), ("maximum", encoding_size[1] - 1), ("center", encoding_size[1] // 2)):
        ET.SubElement(step, tag).text = str(value)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _matrix_size(path: Path, root: ET.Element, space: str) -> tuple[int, int, int]:
    ns = {"m": ISMRMRD_NS}
    node = root.find(f"m:encoding/m:{space}/m:matrixSize", ns)
    try:
        return tuple(int(node.find(f"m:{axis}", ns).text) for axis in "xyz")  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        raise InputError(path, f"ismrmrd_header lacks a valid encoding/{space}/matrixSize") from None


def _parse_header(path: Path, raw: Any) -> tuple[tuple[int, int, int], tuple[int, int, int], float | None]:
    """``(encoded matrix size, recon matrix size, recon field of view along x in mm or None)``."""
    raw = raw.tobytes() if isinstance(raw, (np.ndarray, np.generic)) else raw
    try:
        root = ET.fromstring(raw)
    except (ET.ParseError, TypeError, ValueError) as exc:
        raise InputError(path, f"ismrmrd_header is not valid XML: {_one_line(exc)}") from None
    node = root.find(f"{{{ISMRMRD_NS}}}encoding/{{{ISMRMRD_NS}}}reconSpace/{{{ISMRMRD_NS}}}fieldOfView_mm/{{{ISMRMRD_NS}}}x")
    try:
        fov = float(node.text) if node is not None and node.text else None
    except ValueError:
        fov = None
    fov = fov if fov is not None and np.isfinite(fov) and fov > 0 else None
    return _matrix_size(path, root, "encodedSpace"), _matrix_size(path, root, "reconSpace"), fov


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class FastMRIVolume:
    """Metadata of one fastMRI multi-coil file; k-space slices are read on demand.

    ``kspace_shape`` is (slices, coils, H, W). ``encoding_size``/``recon_size`` are the
    header's ``(x, y, z)`` matrix sizes (None without a header); ``recon_fov_mm`` its reconSpace
    field of view along x in mm (None without one). ``mask`` is the file's (W,)
    float32 mask or None. ``attrs`` holds the HDF5 attributes (``acquisition``, ``max``, ...).
    """

    path: Path
    kspace_shape: tuple[int, int, int, int]
    encoding_size: tuple[int, int, int] | None
    recon_size: tuple[int, int, int] | None
    mask: np.ndarray | None
    has_target: bool
    attrs: dict[str, Any]
    recon_fov_mm: float | None = None

    @property
    def num_slices(self) -> int:
        return self.kspace_shape[0]

    @property
    def num_coils(self) -> int:
        return self.kspace_shape[1]

    @property
    def crop_size(self) -> tuple[int, int]:
        """Image size to evaluate at: the header's recon (x, y), else fastMRI's 320 x 320."""
        return self.recon_size[:2] if self.recon_size is not None else DEFAULT_CROP

    def _read(self, key: str, index: int) -> np.ndarray:
        if not -self.num_slices <= index < self.num_slices:
            raise IndexError(f"slice {index} out of range for {self.num_slices} slices")
        try:
            with h5py.File(self.path, "r") as f:
                data = f[key]
                if not isinstance(data, h5py.Dataset) or data.ndim < 1 or data.dtype.kind not in "iufc":
                    raise InputError(self.path, f"{key} must be a numeric dataset")
                if data.shape[0] != self.num_slices:
                    raise InputError(self.path, f"{key} has {data.shape[0]} slices, kspace has {self.num_slices}")
                if int(np.prod(data.shape[1:], dtype=object)) > MAX_SLICE_VALUES:
                    raise InputError(self.path, f"{key} slices of shape {data.shape[1:]} exceed "
                                                f"{MAX_SLICE_VALUES} values (corrupt header?)")
                return np.asarray(data[index])
        except InputError:
            raise
        except Exception as exc:  # h5py raises OSError, KeyError, ValueError, TypeError for corrupt files
            raise InputError(self.path, f"cannot read {key} slice {index}: {_one_line(exc)}") from None

    def kspace(self, index: int) -> np.ndarray:
        """Slice ``index`` of k-space, complex64 ``(C, H, W)``; InputError if it holds NaN/Inf."""
        with np.errstate(all="ignore"):
            data = self._read("kspace", index).astype(np.complex64, copy=False)
        if not np.isfinite(data).all():
            raise InputError(self.path, f"kspace slice {index} holds NaN or Inf")
        return data

    def target(self, index: int) -> np.ndarray:
        """Slice ``index`` of ``reconstruction_rss``, float32 ``(h, w)``."""
        if not self.has_target:
            raise InputError(self.path, "no reconstruction_rss dataset")
        data = self._read("reconstruction_rss", index)
        if data.ndim != 2 or data.dtype.kind == "c":
            raise InputError(self.path, f"reconstruction_rss slices must be real (h, w), got {data.dtype} {data.shape}")
        with np.errstate(all="ignore"):
            data = data.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            raise InputError(self.path, f"reconstruction_rss slice {index} holds NaN or Inf")
        return data


def read_fastmri(path: str | os.PathLike[str]) -> FastMRIVolume:
    """Open a fastMRI multi-coil file and validate its layout without loading k-space.

    InputError (one line naming the file) for a missing file, a file that is not HDF5 or is
    truncated, a missing ``kspace``, a ``kspace`` that is not complex (slices, coils, H, W), a
    ``mask`` that is not (W,), or an unreadable header. NaN/Inf are checked per slice by
    :meth:`FastMRIVolume.kspace`. The metadata are parsed in a forked child with a deadline
    (:func:`recon.io.guard.guarded`): libhdf5 spins on some corrupted variable-length headers.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found" if not path.exists() else "not a regular file")
    return guarded(path, _open_and_inspect, path)


def _open_and_inspect(path: Path) -> FastMRIVolume:
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        if not h5py.is_hdf5(path):
            raise InputError(path, "not an HDF5 file") from None
        raise InputError(path, f"cannot open HDF5 file (truncated?): {_one_line(exc)}") from None
    try:
        with handle as f:
            return _inspect(path, f)
    except InputError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, TypeError for corrupt files
        raise InputError(path, f"cannot read HDF5 file (truncated?): {_one_line(exc)}") from None


def _inspect(path: Path, f: h5py.File) -> FastMRIVolume:
    if "kspace" not in f or not isinstance(f["kspace"], h5py.Dataset):
        raise InputError(path, "no 'kspace' dataset")
    kspace = f["kspace"]
    if kspace.ndim != 4:
        hint = " (single-coil files are not supported)" if kspace.ndim == 3 else ""
        raise InputError(path, f"kspace must be (slices, coils, H, W), got shape {kspace.shape}{hint}")
    if kspace.dtype.kind != "c":
        raise InputError(path, f"kspace must be complex, got {kspace.dtype}")
    if 0 in kspace.shape:
        raise InputError(path, f"kspace has an empty dimension: shape {kspace.shape}")
    mask = None
    if "mask" in f:
        stored = f["mask"]
        if not isinstance(stored, h5py.Dataset) or stored.shape != (kspace.shape[-1],) or stored.dtype.kind not in "iufb":
            raise InputError(path, f"mask must have shape ({kspace.shape[-1]},) and be real, got "
                                   f"{getattr(stored, 'dtype', 'a group')} {getattr(stored, 'shape', '')}")
        mask = np.asarray(stored, dtype=np.float32)
        if not np.isfinite(mask).all():
            raise InputError(path, "mask holds NaN or Inf")
    sizes: tuple[Any, Any, float | None] = (None, None, None)
    if "ismrmrd_header" in f:
        if not isinstance(f["ismrmrd_header"], h5py.Dataset) or f["ismrmrd_header"].size > 2**24:
            raise InputError(path, "ismrmrd_header must be a dataset holding XML text")
        sizes = _parse_header(path, f["ismrmrd_header"][()])
        for name, size in zip(("encodedSpace", "reconSpace"), sizes[:2]):
            if not all(0 < n <= 2**16 for n in size):
                raise InputError(path, f"ismrmrd_header {name}/matrixSize {size} must be positive and at most 65536")
    if "reconstruction_rss" in f and not isinstance(f["reconstruction_rss"], h5py.Dataset):
        raise InputError(path, "reconstruction_rss must be a dataset")
    return FastMRIVolume(
        path=path,
        kspace_shape=tuple(int(n) for n in kspace.shape),  # type: ignore[arg-type]
        encoding_size=sizes[0],
        recon_size=sizes[1],
        mask=mask,
        has_target="reconstruction_rss" in f,
        attrs={key: _attr(value) for key, value in f.attrs.items()},
        recon_fov_mm=sizes[2],
    )


def write_h5(path: str | os.PathLike[str], datasets: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """Write ``datasets`` and root ``attrs`` (None values skipped) to an HDF5 file, atomically."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = value
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def write_reconstruction(
    path: str | os.PathLike[str],
    images: Any,
    *,
    method: str,
    crop_size: Sequence[int] = DEFAULT_CROP,
    mask: Any = None,
    acceleration: float | None = None,
    center_fraction: float | None = None,
) -> None:
    """Write reconstructions in fastMRI's submission layout, atomically.

    ``images``: (slices, H, W) real or complex, numpy or torch; stored as the float32 magnitude
    centre-cropped to ``crop_size`` (e.g. :attr:`FastMRIVolume.crop_size`; clipped to the image).
    ``mask``: the sampling mask used, stored as float32 if given.
    """
    volume = np.abs(_numpy(images))
    if volume.ndim != 3:
        raise ValueError(f"images must be (slices, H, W), got shape {volume.shape}")
    crop = (min(int(crop_size[0]), volume.shape[-2]), min(int(crop_size[1]), volume.shape[-1]))
    datasets: dict[str, Any] = {"reconstruction": center_crop(volume, crop).astype(np.float32)}
    if mask is not None:
        datasets["mask"] = _numpy(mask).astype(np.float32)
    attrs = {"method": method, "acceleration": acceleration, "center_fraction": center_fraction}
    write_h5(path, datasets, attrs)


def _numpy(data: Any) -> np.ndarray:
    return np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data)
