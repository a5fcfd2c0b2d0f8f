"""Write a reconstruction as a derived DICOM CT series in a new folder.

Every slice gets a new SOPInstanceUID and the series a new SeriesInstanceUID; ImageType is
DERIVED\\SECONDARY\\AXIAL (the CT Image module asks for AXIAL or LOCALIZER as its third value).
Values are stored as signed 16-bit integers of HU (mu converted with MU_WATER) with
RescaleSlope / RescaleIntercept (slope 1, intercept 0 unless the range needs a coarser step).
Given the source's :class:`~recon.io.dicom_read.DicomGeometry`, the series lands on the same
patient coordinates: ImagePositionPatient per slice, ImageOrientationPatient, PixelSpacing,
SliceThickness, and the patient, study and frame-of-reference elements (StudyInstanceUID,
FrameOfReferenceUID) copied. Without one it is a fresh study: axial slices centred on the
origin with the given pixel size and slice distance.

The series is written into a hidden temporary folder beside the target and renamed into place,
so nobody sees half a series; an existing target is refused (nothing is overwritten).
"""

from __future__ import annotations

import copy
import datetime
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from operators.ct import MU_WATER

from ..errors import InputError
from .atomic import atomic_write
from .dicom_read import AXIAL, DicomGeometry

__all__ = ["mu_to_hu", "write_dicom_series"]

_INT16 = (-32768, 32767)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    """Attenuation (1/cm) to Hounsfield units: 1000 * (mu / MU_WATER - 1)."""
    return 1000.0 * (np.asarray(mu, dtype=np.float64) / MU_WATER - 1.0)


def write_dicom_series(folder: str | os.PathLike[str], image: np.ndarray, *,
                       geometry: DicomGeometry | None = None, pixel_size_mm: float | None = None,
                       slice_thickness_mm: float | None = None, units: str = "attenuation",
                       description: str = "recon reconstruction") -> list[Path]:
    """Write ``image`` (``(H, W)`` slice or ``(D, H, W)`` volume, 1/cm or ``units="hu"``) as a
    DICOM CT series into the new folder ``folder``; returns the written files in slice order.

    With ``geometry`` the slices take its positions (one per slice), orientation and spacing; a
    square image that is the centred zero padding of the source's ``rows x columns`` (what
    :func:`recon.data.sources.image_file` makes of a non-square slice) is cropped back first.
    Without it ``pixel_size_mm`` is needed (and ``slice_thickness_mm`` for more than one slice).
    """
    folder = Path(folder)
    if units not in ("attenuation", "hu"):
        raise ValueError(f"unknown units {units!r}; valid units: attenuation, hu")
    data = np.asarray(image, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.size == 0:
        raise InputError(folder, f"expected an (H, W) image or (D, H, W) volume to write, got shape {np.shape(image)}")
    if not np.isfinite(data).all():
        raise InputError(folder, "image to write holds NaN or Inf")
    if os.path.lexists(folder):
        raise InputError(folder, "already exists; a DICOM series is written into a new folder only")
    hu = data if units == "hu" else mu_to_hu(data)
    if geometry is not None:
        hu = _fit(folder, hu, geometry)
    else:
        geometry = _fresh_geometry(folder, hu.shape, pixel_size_mm, slice_thickness_mm)
    spacing = geometry.pixel_spacing_mm or (float(pixel_size_mm or 0),) * 2
    if not all(v > 0 for v in spacing):
        raise InputError(folder, "no pixel spacing: the source records none, so give pixel_size_mm")
    thickness = geometry.slice_thickness_mm or geometry.slice_spacing_mm() or slice_thickness_mm
    stored, slope, intercept = _quantise(hu)
    return _write(folder, stored, slope, intercept, geometry, spacing, thickness, description)


def _fit(folder: Path, hu: np.ndarray, geometry: DicomGeometry) -> np.ndarray:
    """``hu`` on the source's grid: check the slice count, crop a centred square padding."""
    depth, h, w = hu.shape
    if depth != len(geometry.positions_mm):
        raise InputError(folder, f"{depth} slices to write but the source geometry has {len(geometry.positions_mm)}")
    rows, cols = geometry.rows, geometry.columns
    if (h, w) == (rows, cols):
        return hu
    n = max(rows, cols)
    if (h, w) != (n, n):
        raise InputError(folder, f"image of {h}x{w} pixels does not fit the source's {rows}x{cols} grid")
    top, left = (n - rows) // 2, (n - cols) // 2
    return hu[:, top : top + rows, left : left + cols]


def _fresh_geometry(folder: Path, shape: tuple[int, ...], pixel_size_mm: float | None,
                    slice_thickness_mm: float | None) -> DicomGeometry:
    """Axial slices centred on the origin, slice k at z = (k - (D - 1) / 2) * thickness, a new study."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    depth, rows, cols = shape
    if not (pixel_size_mm and pixel_size_mm > 0):
        raise InputError(folder, "pixel_size_mm is needed when the source was not DICOM")
    if depth > 1 and not (slice_thickness_mm and slice_thickness_mm > 0):
        raise InputError(folder, "slice_thickness_mm is needed for a volume when the source was not DICOM")
    step = slice_thickness_mm or pixel_size_mm
    positions = np.zeros((depth, 3))
    positions[:, 0] = -(cols - 1) / 2 * pixel_size_mm
    positions[:, 1] = -(rows - 1) / 2 * pixel_size_mm
    positions[:, 2] = (np.arange(depth) - (depth - 1) / 2) * step
    reference = Dataset()
    now = datetime.datetime.now()
    reference.PatientName, reference.PatientID = "recon^simulated", "recon"
    reference.PatientBirthDate, reference.PatientSex = "", ""
    reference.StudyInstanceUID, reference.FrameOfReferenceUID = generate_uid(), generate_uid()
    reference.StudyDate, reference.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    reference.StudyID, reference.AccessionNumber, reference.ReferringPhysicianName = "1", "", ""
    reference.PositionReferenceIndicator = ""
    return DicomGeometry(positions, AXIAL, (float(pixel_size_mm),) * 2, slice_thickness_mm, rows, cols, reference)


def _quantise(hu: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values and (slope, intercept) with HU = stored * slope + intercept."""
    low, high = float(hu.min()), float(hu.max())
    slope, intercept = 1.0, 0.0
    if low < _INT16[0] or high > _INT16[1]:  # wider than int16 at 1 HU: centre the range, coarser steps
        intercept = round((low + high) / 2)
        slope = float(np.ceil(max(high - intercept, intercept - low) / _INT16[1]))
    stored = np.clip(np.rint((hu - intercept) / slope), *_INT16).astype(np.int16)
    return stored, slope, intercept


def _write(folder: Path, stored: np.ndarray, slope: float, intercept: float, geometry: DicomGeometry,
           spacing: tuple[float, float], thickness: float | None, description: str) -> list[Path]:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
    staging.mkdir()
    series_uid, now = generate_uid(), datetime.datetime.now()
    normal = geometry.normal
    names = [f"IM{k + 1:05d}.dcm" for k in range(len(stored))]
    try:
        for k, (name, pixels) in enumerate(zip(names, stored)):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
            meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
            ds = FileDataset(name, {}, file_meta=meta, preamble=b"\0" * 128)
            for element in geometry.reference:
                ds.add(copy.deepcopy(element))
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 9001, k + 1
            ds.Modality, ds.ImageType = "CT", ["DERIVED", "SECONDARY", "AXIAL"]
            ds.SeriesDescription, ds.DerivationDescription = description[:64], description[:1024]
            ds.Manufacturer, ds.SoftwareVersions = "recon", "recon"
            ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
            ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
            for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                            "StudyID", "AccessionNumber", "ReferringPhysicianName", "PositionReferenceIndicator"):
                if keyword not in ds:  # type 2: present, possibly empty
                    setattr(ds, keyword, "")
            if "FrameOfReferenceUID" not in ds:
                ds.FrameOfReferenceUID = generate_uid()
            position = geometry.positions_mm[k]
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
            ds.SliceLocation = _ds(float(position @ normal))
            ds.PixelSpacing = [_ds(v) for v in spacing]
            ds.SliceThickness = _ds(thickness) if thickness else ""
            ds.KVP, ds.AcquisitionNumber = "", ""
            ds.Rows, ds.Columns = pixels.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "HU"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
            ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
            with atomic_write(staging / name, "wb") as handle:
                pydicom.dcmwrite(handle, ds, enforce_file_format=True)
        os.rename(staging, folder)  # fails when the folder appeared meanwhile and is not empty
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [folder / name for name in names]


def _ds(value: float) -> str:
    """A number as a DICOM decimal string (at most 16 characters)."""
    text = f"{float(value):.10g}"
    return text if len(text) <= 16 else f"{float(value):.8e}"[:16]
