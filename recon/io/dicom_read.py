"""Read DICOM CT: one slice file or a folder holding one series, in HU, with its geometry.

A folder becomes a volume: its DICOM files are grouped by SeriesInstanceUID (several series,
or one series whose slices differ in orientation, size or pixel spacing, is refused with a
list of what was found), sorted by ImagePositionPatient projected on the slice normal (the
cross product of ImageOrientationPatient's row and column directions, so slices run in the
direction of increasing normal coordinate: inferior to superior for axial slices), and spaced
by those projections (SliceThickness is not the spacing; irregular gaps give a warning). Files
without the DICM preamble, and DICOM files holding no image (DICOMDIR, reports), are ignored; a
DICOM file that cannot be parsed is an error naming it.

Each slice's stored values are rescaled to HU with its own RescaleSlope / RescaleIntercept;
padding pixels (PixelPaddingValue) and values below -1024 HU become air (-1000 HU). Pixels keep
the stored row/column order. :class:`DicomGeometry` records what a derived series needs to
land on the same patient coordinates (:mod:`recon.io.dicom_write`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["DicomGeometry", "HU_AIR", "checked_pixels", "is_dicom_file", "one_line", "pick_slice", "read_dicom_file",
           "read_dicom_series"]

HU_AIR = -1000.0
HU_MIN_VALID = -1024.0  # CT values below this lie outside the scanner's field of view
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Copied from the source into a derived series: patient, general study, frame of reference.
REFERENCE_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize", "PatientPosition", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
    "PositionReferenceIndicator",
)
_ORIENTATION_TOLERANCE = 1e-4
_IRREGULAR = 0.01  # relative deviation of a gap from the mean spacing that triggers a warning


@dataclass(frozen=True)
class DicomGeometry:
    """Where a DICOM image lies in the patient: per slice ``positions_mm`` ``(D, 3)``
    (ImagePositionPatient, the centre of the first pixel, in the image's slice order),
    ``orientation`` (ImageOrientationPatient: row then column direction cosines),
    ``pixel_spacing_mm`` ``(row, column)`` (PixelSpacing; None when the file has none),
    ``slice_thickness_mm`` (SliceThickness, or None), the stored ``rows`` x ``columns``, and
    ``reference``: the patient, study and frame-of-reference elements a derived series copies
    (a pydicom Dataset)."""

    positions_mm: np.ndarray
    orientation: tuple[float, ...]
    pixel_spacing_mm: tuple[float, float] | None
    slice_thickness_mm: float | None
    rows: int
    columns: int
    reference: object

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, row direction x column direction."""
        row, col = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        return np.cross(row, col)

    def slice_spacing_mm(self) -> float | None:
        """Mean distance between neighbouring slices along the normal (None for one slice)."""
        if len(self.positions_mm) < 2:
            return None
        along = self.positions_mm @ self.normal
        return float((along[-1] - along[0]) / (len(along) - 1))

    def single(self, index: int) -> "DicomGeometry":
        """The geometry of slice ``index`` alone."""
        return DicomGeometry(self.positions_mm[index : index + 1].copy(), self.orientation, self.pixel_spacing_mm,
                             self.slice_thickness_mm, self.rows, self.columns, self.reference)


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` carries the 'DICM' marker after the 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError as exc:
        raise InputError(path, f"cannot read file: {one_line(exc)}") from exc


def read_dicom_file(path: Path, slice_index: int | None = None) -> tuple[np.ndarray, DicomGeometry]:
    """One DICOM CT file as HU, float64 ``(H, W)`` (frame ``slice_index`` of a multi-frame file,
    default the middle one), and its geometry (axial at the origin when the file has none)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        _check_ct(path, ds)
        if "PixelData" not in ds:
            raise InputError(path, "DICOM file has no pixel data")
        raw = ds.pixel_array
    except InputError:
        raise
    except InvalidDicomError as exc:
        raise InputError(path, "not a DICOM file (no DICOM header)") from exc
    except Exception as exc:  # pydicom raises many types for corrupt or undecodable files
        raise InputError(path, f"cannot read DICOM file: {one_line(exc)}") from exc
    if raw.ndim == 3:
        raw = raw[pick_slice(path, raw.shape[0], slice_index)]
    elif slice_index is not None:
        raise InputError(path, f"slice_index given but the DICOM image is 2D (shape {raw.shape})")
    return _to_hu(path, ds, raw), _geometry(path, ds, [ds])


def read_dicom_series(folder: Path, slice_index: int | None = None,
                      whole: bool = True) -> tuple[np.ndarray, DicomGeometry]:
    """The one CT series in ``folder`` as HU: float64 ``(D, H, W)`` sorted along the slice
    normal when ``whole``, else slice ``slice_index`` (default the middle one) ``(H, W)``
    (only that file's pixels are decoded); and its geometry (one position when not ``whole``)."""
    import pydicom

    headers = _series_headers(folder)
    datasets = [ds for _, ds in headers]
    geometry = _geometry(folder, datasets[0], datasets)
    if not whole:
        index = pick_slice(folder, len(headers), slice_index)
        path = headers[index][0]
        try:
            ds = pydicom.dcmread(path)
            raw = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for corrupt or undecodable files
            raise InputError(path, f"cannot read DICOM pixels: {one_line(exc)}") from exc
        return _to_hu(path, ds, _plain(path, raw)), geometry.single(index)
    slices = []
    for path, _ in headers:
        try:
            ds = pydicom.dcmread(path)
            raw = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for corrupt or undecodable files
            raise InputError(path, f"cannot read DICOM pixels: {one_line(exc)}") from exc
        slices.append(_to_hu(path, ds, _plain(path, raw)))
    return np.stack(slices), geometry


def _series_headers(folder: Path) -> list[tuple[Path, object]]:
    """``(path, header)`` of the folder's one series, sorted along the slice normal; any mix refused."""
    import pydicom

    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    found, ignored = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not is_dicom_file(path):
            ignored.append(path.name)
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for corrupt files
            raise InputError(path, f"cannot read DICOM file: {one_line(exc)}") from exc
        if "Rows" not in ds or "Columns" not in ds:  # DICOMDIR, structured reports, presentation states
            ignored.append(path.name)
            continue
        found.append((path, ds))
    if not found:
        shown = ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        raise InputError(folder, "no DICOM image files in the folder"
                                 + (f" ({len(ignored)} other files ignored: {shown})" if ignored else ""))
    for path, ds in found:
        _check_ct(path, ds)
    series: dict[str, list[tuple[Path, object]]] = {}
    for path, ds in found:
        series.setdefault(str(ds.get("SeriesInstanceUID", "(no SeriesInstanceUID)")), []).append((path, ds))
    if len(series) > 1:
        raise InputError(folder, f"holds {len(series)} DICOM series; put one series per folder: "
                                 + "; ".join(_describe(uid, items) for uid, items in series.items()))
    _check_uniform(folder, found)
    if len(found) == 1:
        return found
    if any("ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds for _, ds in found):
        raise InputError(folder, "slices lack ImagePositionPatient / ImageOrientationPatient; cannot order them")
    normal = np.cross(*np.reshape(_floats(found[0][0], found[0][1], "ImageOrientationPatient", 6), (2, 3)))
    along = np.array([_floats(p, ds, "ImagePositionPatient", 3) @ normal for p, ds in found])
    order = np.argsort(along, kind="stable")
    along = along[order]
    gaps = np.diff(along)
    if gaps.min() < 1e-3:
        k = int(np.argmin(gaps))
        names = found[order[k]][0].name, found[order[k + 1]][0].name
        raise InputError(folder, f"two slices at the same position ({names[0]}, {names[1]}): duplicates or "
                                 "several acquisitions in one series")
    mean = (along[-1] - along[0]) / (len(along) - 1)
    if np.abs(gaps - mean).max() > _IRREGULAR * mean:
        warnings.warn(f"{folder}: irregular slice spacing, {gaps.min():.3g} to {gaps.max():.3g} mm between "
                      f"slices (mean {mean:.4g} mm used): missing slices?", UserWarning, stacklevel=3)
    return [found[i] for i in order]


def _describe(uid: str, items: list) -> str:
    ds = items[0][1]
    words = [str(ds.get(k, "")) for k in ("Modality", "SeriesNumber", "SeriesDescription")]
    label = " ".join(w for w in words if w)
    return f"{uid} ({len(items)} files{', ' + label if label else ''}; e.g. {items[0][0].name})"


def _check_uniform(folder: Path, found: list) -> None:
    """Refuse a series whose slices differ in size, orientation or pixel spacing, listing the groups."""
    def key(path: Path, ds) -> tuple:
        orientation = ("ImageOrientationPatient" in ds
                       and tuple(np.round(_floats(path, ds, "ImageOrientationPatient", 6) / _ORIENTATION_TOLERANCE)))
        spacing = "PixelSpacing" in ds and tuple(np.round(_floats(path, ds, "PixelSpacing", 2), 4))
        return int(ds.Rows), int(ds.Columns), orientation, spacing

    groups: dict[tuple, list[str]] = {}
    for path, ds in found:
        groups.setdefault(key(path, ds), []).append(path.name)
    if len(groups) > 1:
        parts = [f"{len(names)} files of {k[0]}x{k[1]} pixels, orientation "
                 f"{'none' if k[2] is False else np.round(np.asarray(k[2]) * _ORIENTATION_TOLERANCE, 3).tolist()}, "
                 f"spacing {'none' if k[3] is False else list(k[3])} (e.g. {names[0]})" for k, names in groups.items()]
        raise InputError(folder, "mixed slices in one series (differing size, orientation or pixel spacing): "
                                 + "; ".join(parts))


def _check_ct(path: Path, ds) -> None:
    modality = str(ds.get("Modality", "CT") or "CT")
    if modality != "CT":
        raise InputError(path, f"DICOM modality {modality} is not CT; CT data sources read CT images in HU "
                               "(convert other images to .npy in 1/cm)")
    if _number(path, ds, "SamplesPerPixel", 1) != 1:
        raise InputError(path, f"expected a greyscale CT image, got {ds.SamplesPerPixel} samples per pixel")


def _geometry(path: Path, first, datasets: list) -> DicomGeometry:
    from pydicom.dataset import Dataset

    orientation = (tuple(float(v) for v in _floats(path, first, "ImageOrientationPatient", 6))
                   if "ImageOrientationPatient" in first else AXIAL)
    positions = np.array([_floats(path, ds, "ImagePositionPatient", 3) if "ImagePositionPatient" in ds
                          else np.zeros(3) for ds in datasets])
    spacing = _pixel_spacing(path, first)
    thickness = _number(path, first, "SliceThickness", 0.0) or None
    reference = Dataset()
    for keyword in REFERENCE_KEYWORDS:
        if keyword in first:
            setattr(reference, keyword, first.data_element(keyword).value)
    return DicomGeometry(positions, orientation, spacing, thickness, int(first.Rows), int(first.Columns), reference)


def _pixel_spacing(path: Path, ds) -> tuple[float, float] | None:
    """PixelSpacing ``(row, column)`` in mm, from the dataset or an enhanced file's shared groups."""
    holder = ds
    if "PixelSpacing" not in ds:
        try:
            holder = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        except (AttributeError, IndexError, KeyError):
            return None
        if "PixelSpacing" not in holder:
            return None
    spacing = _floats(path, holder, "PixelSpacing", 2)
    if not (spacing > 0).all():
        raise InputError(path, f"DICOM PixelSpacing must be positive, got {spacing.tolist()}")
    return float(spacing[0]), float(spacing[1])


def _to_hu(path: Path, ds, raw: np.ndarray) -> np.ndarray:
    """Stored pixels rescaled to HU, padding and out-of-field values set to air, float64 ``(H, W)``."""
    stored = checked_pixels(path, raw)
    slope = _number(path, ds, "RescaleSlope", 1.0)
    if slope == 0:
        raise InputError(path, "DICOM RescaleSlope is 0 (every pixel would equal the intercept)")
    with np.errstate(all="ignore"):
        hu = stored * slope + _number(path, ds, "RescaleIntercept", 0.0)
    if not np.isfinite(hu.astype(np.float32)).all():  # finite in float64 but not in the float32 the image becomes
        raise InputError(path, "rescaled pixel values are NaN or Inf (check RescaleSlope / RescaleIntercept)")
    outside = hu < HU_MIN_VALID
    if "PixelPaddingValue" in ds:
        low = high = _number(path, ds, "PixelPaddingValue", 0.0)
        if "PixelPaddingRangeLimit" in ds:
            low, high = sorted((low, _number(path, ds, "PixelPaddingRangeLimit", low)))
        outside |= (stored >= low) & (stored <= high)
    hu[outside] = HU_AIR
    return hu


def _plain(path: Path, raw: np.ndarray) -> np.ndarray:
    if raw.ndim != 2:
        raise InputError(path, f"expected one 2D slice per file in a series, got pixel shape {raw.shape}")
    return raw


def checked_pixels(path: Path, image: np.ndarray) -> np.ndarray:
    """``image`` as float64 after checks for emptiness, dtype and NaN/Inf (each one error naming ``path``)."""
    if image.size == 0:
        raise InputError(path, f"empty image of shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(path, f"expected real numbers, got dtype {image.dtype} (shape {image.shape})")
    image = image.astype(np.float64)
    bad = np.count_nonzero(~np.isfinite(image))
    if bad:
        raise InputError(path, f"{bad} of {image.size} pixels are NaN or Inf (shape {image.shape})")
    return image


def pick_slice(path: Path, count: int, slice_index: int | None) -> int:
    """``slice_index`` checked against ``count`` slices; None: the middle one."""
    if count < 1:
        raise InputError(path, "no slices (a dimension of size 0)")
    if slice_index is None:
        return count // 2
    if not 0 <= slice_index < count:
        raise InputError(path, f"slice_index {slice_index} out of range for {count} slices")
    return int(slice_index)


def _floats(path: Path, ds, keyword: str, count: int) -> np.ndarray:
    """The ``count`` finite numbers of multi-valued element ``keyword``."""
    try:
        values = np.array([float(v) for v in ds.get(keyword)], dtype=np.float64)
    except Exception:  # absent, text, or a single value
        raise InputError(path, f"DICOM {keyword} is not {count} numbers") from None
    if values.shape != (count,) or not np.isfinite(values).all():
        raise InputError(path, f"DICOM {keyword} must be {count} finite numbers, got {values.tolist()}")
    return values


def _number(path: Path, ds, keyword: str, default: float) -> float:
    """The finite number that DICOM element ``keyword`` holds (``default`` when absent or empty)."""
    try:
        value = ds.get(keyword, default)
        if value is None or value == "":
            return default
        number = float(value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
                       else value)
    except Exception:  # text, or a sequence where a number belongs
        raise InputError(path, f"DICOM {keyword} is not a number") from None
    if not np.isfinite(number):
        raise InputError(path, f"DICOM {keyword} is {number}")
    return number


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
