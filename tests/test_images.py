"""Tests for image reading (npy, NIfTI, DICOM CT) and atomic writing."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from recon.errors import InputError
from recon.io.atomic import atomic_write, save_json, save_npy
from recon.io.images import hu_to_mu, load_image, save_nifti

MU_WATER = 0.193


def _ramp(h: int = 6, w: int = 8) -> np.ndarray:
    return (np.arange(h * w, dtype=np.float32).reshape(h, w) + 1.0) / 100.0


def test_npy_roundtrip_and_shapes(tmp_path: Path) -> None:
    image = _ramp()
    save_npy(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(load_image(tmp_path / "a.npy"), image)  # non-square is fine
    save_npy(tmp_path / "b.npy", image[None, None].astype(np.float64))
    out = load_image(tmp_path / "b.npy")
    assert out.dtype == np.float32 and out.shape == image.shape
    stack = np.stack([image, 2 * image, 3 * image])
    save_npy(tmp_path / "c.npy", stack)
    np.testing.assert_array_equal(load_image(tmp_path / "c.npy", slice_index=2), stack[2])
    np.testing.assert_array_equal(load_image(tmp_path / "c.npy"), stack[1])


def test_npy_hu_units(tmp_path: Path) -> None:
    save_npy(tmp_path / "hu.npy", np.array([[-1000.0, 0.0], [1000.0, -3024.0]]))
    out = load_image(tmp_path / "hu.npy", units="hu")
    np.testing.assert_allclose(out, [[0.0, MU_WATER], [2 * MU_WATER, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(hu_to_mu(np.array([40.0])), [MU_WATER * 1.04])
    with pytest.raises(ValueError, match="attenuation, hu"):
        load_image(tmp_path / "hu.npy", units="kelvin")


@pytest.mark.parametrize("name", ["img.nii", "img.nii.gz"])
def test_nifti_roundtrip(tmp_path: Path, name: str) -> None:
    image = _ramp()
    save_nifti(tmp_path / name, image, spacing=(0.5, 0.5, 2.0))
    np.testing.assert_array_equal(load_image(tmp_path / name), image)
    assert nib.load(tmp_path / name).header.get_zooms() == (0.5, 0.5, 2.0)
    stack = np.stack([image, -image, 2 * image, 3 * image])
    save_nifti(tmp_path / name, stack)
    np.testing.assert_array_equal(load_image(tmp_path / name, slice_index=1), -image)
    np.testing.assert_array_equal(load_image(tmp_path / name), 2 * image)


def test_nifti_radiological_orientation(tmp_path: Path) -> None:
    volume = np.zeros((8, 6, 3), dtype=np.float32)  # RAS: (right, anterior, superior)
    volume[7, 5, 0] = 1.0  # most right, most anterior, most inferior
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "ras.nii")
    image = load_image(tmp_path / "ras.nii", slice_index=0)
    assert image.shape == (6, 8) and image[0, 0] == 1.0  # anterior at the top, right on the left
    # The same anatomy stored LPS (x to the left, y posterior, z down) reads identically.
    flipped = np.diag([-1.0, -1.0, -1.0, 1.0])
    nib.save(nib.Nifti1Image(volume[::-1, ::-1, ::-1].copy(), flipped), tmp_path / "lps.nii.gz")
    np.testing.assert_array_equal(load_image(tmp_path / "lps.nii.gz", slice_index=0), image)


def _write_dicom(path: Path, pixels: np.ndarray, padding: int | None, preamble: bool = True) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if padding is not None:
        ds.PixelPaddingValue = padding
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=preamble)


def test_dicom_ct_slice_hu_to_mu(tmp_path: Path) -> None:
    pixels = np.full((4, 5), 1024, dtype=np.uint16)  # 0 HU, water
    pixels[1, 1] = 1064  # +40 HU
    pixels[1, 2] = 24  # -1000 HU, air
    pixels[2, 2] = 0  # -1024 HU, clipped to 0
    pixels[0, :] = 3000  # padding value (would be +1976 HU)
    _write_dicom(tmp_path / "slice.dcm", pixels, padding=3000)
    expected = np.full((4, 5), MU_WATER)
    expected[1, 1], expected[1, 2], expected[2, 2], expected[0, :] = MU_WATER * 1.04, 0.0, 0.0, 0.0
    out = load_image(tmp_path / "slice.dcm")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    _write_dicom(tmp_path / "IM0001", pixels, padding=None)  # recognised without an extension
    assert load_image(tmp_path / "IM0001")[0, 0] == pytest.approx(MU_WATER * 2.976, rel=1e-6)


def _error_cases(tmp_path: Path) -> list[tuple[Path, dict]]:
    cases = [(tmp_path / "missing.npy", {})]
    (tmp_path / "garbage.npy").write_bytes(b"not an npy file at all")
    (tmp_path / "garbage.nii.gz").write_bytes(gzip.compress(b"\0" * 400))
    (tmp_path / "garbage.dcm").write_bytes(b"\0" * 300)
    (tmp_path / "notes.txt").write_text("hello")
    save_nifti(tmp_path / "truncated.nii", np.ones((32, 32), dtype=np.float32))
    full = (tmp_path / "truncated.nii").read_bytes()
    (tmp_path / "truncated.nii").write_bytes(full[: len(full) - 2000])
    cases += [(tmp_path / n, {}) for n in ("garbage.npy", "garbage.nii.gz", "garbage.dcm", "notes.txt", "truncated.nii")]
    arrays = {
        "rank1.npy": np.ones(5),
        "rank4.npy": np.ones((2, 2, 4, 4)),
        "nan.npy": np.array([[1.0, np.nan], [0.0, 1.0]]),
        "inf.npy": np.array([[1.0, np.inf], [0.0, 1.0]]),
        "empty.npy": np.zeros((0, 5)),
        "complex.npy": np.ones((3, 3), dtype=np.complex64),
    }
    for name, array in arrays.items():
        np.save(tmp_path / name, array)
        cases.append((tmp_path / name, {}))
    np.save(tmp_path / "stack.npy", np.ones((3, 4, 4)))
    cases += [(tmp_path / "stack.npy", {"slice_index": 3}), (tmp_path / "rank1.npy", {"slice_index": 0})]
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3, 2), dtype=np.float32), np.eye(4)), tmp_path / "rank4.nii")
    nib.save(nib.Nifti1Image(np.full((4, 4), np.nan, dtype=np.float32), np.eye(4)), tmp_path / "nan.nii.gz")
    cases += [(tmp_path / "rank4.nii", {}), (tmp_path / "nan.nii.gz", {})]
    return cases


def test_errors_name_the_file(tmp_path: Path) -> None:
    for path, kwargs in _error_cases(tmp_path):
        with pytest.raises(InputError) as info:
            load_image(path, **kwargs)
        assert path.name in str(info.value), str(info.value)
        assert str(info.value).startswith(str(path))


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    save_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("partial")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]  # temp file removed
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
