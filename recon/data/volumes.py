"""Seeded 3D CT head volumes whose anatomy is continuous across slices, and volume sources.

A volume is built from a held-out (or training) 2D head phantom of :mod:`recon.data.phantoms`:
slice ``k`` at height ``z_k`` is that head scaled by ``s(z) = sqrt(1 - (z / H)^2)`` about a
centre that drifts with ``z`` (a skull-like ellipsoid of half-height ``H``), so contours,
ventricles and texture move smoothly from slice to slice; 1-3 ellipsoidal low-contrast lesions
span several slices. Attenuation in 1/cm, shape ``(D, N, N)``. :func:`volume_file` reads a user's
volume (DICOM series folder, NIfTI, ``.npy``) at the scale its file records.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, InputError
from .phantoms import HEAD_FOV_CM, MU_WHITE_MATTER, SPLITS, make_phantom
from .sources import GroundTruth, chosen_size_cm, square_pixel_cm

__all__ = ["head_volume", "phantom_volume", "volume_file"]

HALF_HEIGHT_MM = 90.0  # the head ellipsoid's half-height


def head_volume(split: str, index: int, size: int = 128, depth: int = 16, slice_mm: float = 5.0) -> np.ndarray:
    """Head volume ``index`` of ``split``, float32 ``(depth, size, size)``, 1/cm, centred at mid-head."""
    from scipy import ndimage

    if split not in SPLITS or index < 0 or depth < 1 or slice_mm <= 0:
        raise ValueError(f"bad volume request: split={split!r}, index={index}, depth={depth}, slice_mm={slice_mm}")
    base = make_phantom("head", split, index, size).astype(np.float64)
    rng = np.random.default_rng(np.random.SeedSequence(20261123, spawn_key=(SPLITS.index(split), index)))
    offset_mm = rng.uniform(-20.0, 20.0)  # which part of the head the stack covers
    z_mm = offset_mm + (np.arange(depth) - (depth - 1) / 2) * slice_mm
    drift = rng.normal(0.0, 0.03, 2)  # centre shift per 100 mm of height, fraction of the FOV
    pixel_mm = 10.0 * HEAD_FOV_CM / size
    centre = (np.array([size, size]) - 1) / 2
    volume = np.empty((depth, size, size))
    for k, z in enumerate(z_mm):
        scale = np.sqrt(max(1.0 - (z / HALF_HEIGHT_MM) ** 2, 0.05))
        shift = drift * z / 100.0 * size
        matrix = np.eye(2) / scale
        volume[k] = ndimage.affine_transform(base, matrix, centre - matrix @ (centre + shift), order=1,
                                             mode="constant")
    rows, cols = np.mgrid[0:size, 0:size] * pixel_mm
    brain = np.abs(volume - MU_WHITE_MATTER) < 0.004
    for _ in range(int(rng.integers(1, 4))):
        k0 = rng.uniform(0, depth - 1)
        r0, c0 = rng.uniform(0.35, 0.65, 2) * size * pixel_mm
        radius, half_z = rng.uniform(4.0, 8.0), rng.uniform(6.0, 12.0)
        contrast = rng.choice([-1.0, 1.0]) * rng.uniform(0.006, 0.012)
        for k in range(depth):
            dz = (k - k0) * slice_mm / half_z
            if abs(dz) < 1:
                inside = (rows - r0) ** 2 + (cols - c0) ** 2 <= (radius**2) * (1 - dz**2)
                volume[k][inside & brain[k]] += contrast
    return np.clip(volume, 0, None).astype(np.float32)


def phantom_volume(split: str = "test", index: int = 0, size: int = 128, depth: int = 16,
                   slice_mm: float = 5.0) -> GroundTruth:
    """A seeded head volume as a data source: ``image`` ``(1, 1, D, N, N)``; 25 cm field of view."""
    try:
        volume = head_volume(split, index, size, depth, slice_mm)
    except ValueError as err:
        raise ConfigError(f"data: {err}") from None
    return GroundTruth(torch.from_numpy(volume)[None, None], HEAD_FOV_CM / size, f"head-volume-{split}-{index}",
                       slice_thickness_cm=slice_mm / 10)


def volume_file(path: str, units: str = "attenuation", pixel_size_cm: float | None = None,
                slice_thickness_cm: float | None = None) -> GroundTruth:
    """A CT volume of square axial slices ``(D, N, N)`` from a DICOM series folder, a NIfTI file
    or a ``.npy`` array (HU converted with ``units="hu"``; DICOM is always HU).

    Pixel size and slice distance are the file's (DICOM PixelSpacing and slice positions, NIfTI
    zooms) unless given, which overrides them (with a warning beyond 1 %); a file that records
    none (``.npy``) needs both given.
    """
    from ..io.images import read_volume

    scan = read_volume(path, units=units)
    volume = scan.image
    if volume.shape[1] != volume.shape[2]:
        raise InputError(path, f"slices must be square, got {volume.shape[1]}x{volume.shape[2]} pixels")
    pixel = chosen_size_cm(path, "pixel size", "data.pixel_size_cm=CM", pixel_size_cm,
                           square_pixel_cm(path, scan.spacing_mm))
    file_slice = scan.slice_mm / 10 if scan.slice_mm else None
    if file_slice is None and scan.dicom is not None and scan.dicom.slice_thickness_mm:
        file_slice = scan.dicom.slice_thickness_mm / 10  # one slice: its thickness
    thickness = chosen_size_cm(path, "slice distance", "data.slice_thickness_cm=CM", slice_thickness_cm, file_slice)
    return GroundTruth(torch.from_numpy(volume)[None, None], pixel, str(path), slice_thickness_cm=thickness,
                       dicom=scan.dicom)
