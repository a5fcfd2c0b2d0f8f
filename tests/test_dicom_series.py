"""DICOM series in and out, and the physical scale of file input (DICOM, NIfTI, .npy).

Every DICOM file here is built with pydicom in ``tmp_path`` (pydicom's bundled files are kept
for independent evaluation).
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from recon.data.sources import image_file
from recon.data.volumes import volume_file
from recon.errors import InputError
from recon.io.dicom_write import mu_to_hu, write_dicom_series
from recon.io.images import hu_to_mu, load_image, read_slice, read_volume, save_nifti

MU_WATER = 0.193
# An oblique orientation: rows along x, columns tilted 30 degrees out of the axial plane.
TILTED = (1.0, 0.0, 0.0, 0.0, np.cos(np.pi / 6), np.sin(np.pi / 6))


def _normal(orientation) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def write_slice(path: Path, hu: np.ndarray, *, position=(0.0, 0.0, 0.0), orientation=TILTED,
                spacing=(0.7, 0.7), series_uid="1.2.3.4", modality="CT", slope=1.0, intercept=-1024.0,
                instance=1, thickness=5.0, study_uid="1.2.3.9", frame_uid="1.2.3.8") -> None:
    """One CT slice file of ``hu`` (stored as uint16 with ``slope`` and ``intercept``)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = modality, series_uid, instance
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, frame_uid
    ds.PatientName, ds.PatientID = "Test^Phantom", "P0001"
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    if spacing is not None:
        ds.PixelSpacing = [str(v) for v in spacing]
    ds.SliceThickness = str(thickness)
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)
    ds.PixelData = np.rint((hu - intercept) / slope).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def series_hu(depth: int = 5, rows: int = 6, cols: int = 8) -> np.ndarray:
    """Distinct known HU per slice: a ramp plus 100 HU per slice, air in a corner."""
    base = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) * 10.0 - 200.0
    volume = np.stack([base + 100.0 * k for k in range(depth)])
    volume[:, 0, 0] = -1000.0
    return volume


def write_series(folder: Path, hu: np.ndarray, *, gap: float = 3.0, skip=(), seed: int = 0, **kwargs) -> None:
    """Slices of ``hu`` at ``gap`` mm along the normal (with in-plane offsets that must not
    matter), files named and numbered in shuffled order, slope/intercept varying by slice."""
    folder.mkdir(parents=True, exist_ok=True)
    orientation = kwargs.pop("orientation", TILTED)
    origin, normal, row = np.array([-20.0, 15.0, 40.0]), _normal(orientation), np.array(orientation[:3])
    order = [k for k in range(len(hu)) if k not in skip]
    random.Random(seed).shuffle(order)
    for n, k in enumerate(order):
        position = origin + gap * k * normal + 0.5 * k * row
        slope = (1.0, 0.5, 2.0)[k % 3]
        write_slice(folder / f"f{n:03d}.dcm", hu[k], position=position, orientation=orientation,
                    slope=slope, intercept=-1024.0 - 2 * k, instance=100 - n, **kwargs)


def test_series_sorted_by_position_spaced_from_positions(tmp_path: Path) -> None:
    hu = series_hu()
    write_series(tmp_path / "s", hu)
    (tmp_path / "s" / "notes.txt").write_text("not DICOM")  # ignored
    scan = read_volume(tmp_path / "s")
    np.testing.assert_allclose(scan.image, hu_to_mu(hu), rtol=1e-6)  # sorted, rescaled per slice
    assert scan.spacing_mm == (0.7, 0.7) and scan.slice_mm == pytest.approx(3.0, abs=1e-5)  # not SliceThickness 5
    along = scan.dicom.positions_mm @ _normal(TILTED)
    np.testing.assert_allclose(np.diff(along), 3.0, atol=1e-5)
    with pytest.raises(InputError, match="slices must be square"):
        volume_file(str(tmp_path / "s"))
    middle = image_file(str(tmp_path / "s"))
    np.testing.assert_allclose(middle.image[0, 0, 1:7].numpy(), hu_to_mu(hu[2]), rtol=1e-6)  # padded to 8x8
    assert middle.pixel_size_cm == pytest.approx(0.07) and len(middle.dicom.positions_mm) == 1
    first = image_file(str(tmp_path / "s"), slice_index=0)
    np.testing.assert_allclose(first.image[0, 0, 1:7].numpy(), hu_to_mu(hu[0]), rtol=1e-6)


def test_volume_file_scale_from_series(tmp_path: Path) -> None:
    hu = series_hu(4, 6, 6)
    write_series(tmp_path / "s", hu, gap=2.5, orientation=(1, 0, 0, 0, 1, 0))
    truth = volume_file(str(tmp_path / "s"))
    assert truth.image.shape == (1, 1, 4, 6, 6)
    assert truth.pixel_size_cm == pytest.approx(0.07) and truth.slice_thickness_cm == pytest.approx(0.25)
    with pytest.warns(UserWarning, match="overrides the file's 0.25 cm"):
        assert volume_file(str(tmp_path / "s"), slice_thickness_cm=0.5).slice_thickness_cm == 0.5


def test_irregular_spacing_warns(tmp_path: Path) -> None:
    write_series(tmp_path / "s", series_hu(), skip=(2,))
    with pytest.warns(UserWarning, match="irregular slice spacing"):
        scan = read_volume(tmp_path / "s")
    assert scan.image.shape[0] == 4 and scan.slice_mm == pytest.approx(4.0, abs=1e-5)  # (12 mm) / 3 gaps


def test_mixed_series_refused_with_a_list(tmp_path: Path) -> None:
    hu = series_hu(3)
    write_series(tmp_path / "m", hu, series_uid="1.2.3.4.100")
    write_slice(tmp_path / "m" / "other.dcm", hu[0], series_uid="1.2.3.4.200")
    with pytest.raises(InputError, match="2 DICOM series") as info:
        read_volume(tmp_path / "m")
    assert "1.2.3.4.100 (3 files" in str(info.value) and "1.2.3.4.200 (1 files" in str(info.value)
    write_series(tmp_path / "r", hu)
    write_slice(tmp_path / "r" / "small.dcm", hu[0, :4], position=(0, 0, 99))
    with pytest.raises(InputError, match="mixed slices") as info:
        image_file(str(tmp_path / "r"))
    assert "4x8" in str(info.value) and "6x8" in str(info.value)


def test_non_ct_modality_and_empty_folder_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "mr", series_hu(2), modality="MR")
    with pytest.raises(InputError, match="modality MR is not CT"):
        volume_file(str(tmp_path / "mr"))
    with pytest.raises(InputError, match="modality MR is not CT"):
        image_file(str(tmp_path / "mr" / "f000.dcm"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(InputError, match=r"no DICOM image files.*a\.txt"):
        read_volume(tmp_path / "empty")


def test_pixel_size_from_file_override_and_missing(tmp_path: Path) -> None:
    hu = series_hu(1, 8, 8)[0]
    write_slice(tmp_path / "a.dcm", hu, spacing=(0.43, 0.43))
    assert image_file(str(tmp_path / "a.dcm")).pixel_size_cm == pytest.approx(0.043)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within 1 %: silent
        assert image_file(str(tmp_path / "a.dcm"), pixel_size_cm=0.0432).pixel_size_cm == 0.0432
    with pytest.warns(UserWarning, match=r"0.2 cm overrides the file's 0.043 cm \(\+365 %\)"):
        assert image_file(str(tmp_path / "a.dcm"), pixel_size_cm=0.2).pixel_size_cm == 0.2
    assert image_file(str(tmp_path / "a.dcm"), field_of_view_cm=0.344).pixel_size_cm == pytest.approx(0.043)
    write_slice(tmp_path / "none.dcm", hu, spacing=None)
    np.save(tmp_path / "a.npy", hu_to_mu(hu))
    for path in (tmp_path / "none.dcm", tmp_path / "a.npy"):
        with pytest.raises(InputError, match="records no pixel size; give it with data.pixel_size_cm=") as info:
            image_file(str(path))
        assert str(info.value).startswith(str(path))
        assert image_file(str(path), pixel_size_cm=0.1).pixel_size_cm == 0.1
    write_slice(tmp_path / "rect.dcm", hu, spacing=(0.5, 0.7))
    with pytest.raises(InputError, match="non-square pixels"):
        image_file(str(tmp_path / "rect.dcm"), pixel_size_cm=0.05)
    np.save(tmp_path / "v.npy", np.stack([hu_to_mu(hu)] * 3))
    with pytest.raises(InputError, match="data.pixel_size_cm"):
        volume_file(str(tmp_path / "v.npy"))
    with pytest.raises(InputError, match="data.slice_thickness_cm"):
        volume_file(str(tmp_path / "v.npy"), pixel_size_cm=0.1)
    assert volume_file(str(tmp_path / "v.npy"), pixel_size_cm=0.1, slice_thickness_cm=0.3).slice_thickness_cm == 0.3


def test_nifti_zooms_and_units_honoured(tmp_path: Path) -> None:
    volume = np.stack([hu_to_mu(h) for h in series_hu(3, 6, 6)]).astype(np.float32)
    save_nifti(tmp_path / "v.nii.gz", volume, spacing=(0.8, 0.8, 2.5))
    assert image_file(str(tmp_path / "v.nii.gz")).pixel_size_cm == pytest.approx(0.08)
    truth = volume_file(str(tmp_path / "v.nii.gz"))
    assert truth.pixel_size_cm == pytest.approx(0.08) and truth.slice_thickness_cm == pytest.approx(0.25)
    data = np.asarray(nib.load(tmp_path / "v.nii.gz").dataobj)
    metres = nib.Nifti1Image(data, np.diag([-0.0008, -0.0008, 0.0025, 1.0]))
    metres.header.set_xyzt_units("meter")
    nib.save(metres, tmp_path / "m.nii")
    assert read_slice(tmp_path / "m.nii").spacing_mm == pytest.approx((0.8, 0.8))
    assert volume_file(str(tmp_path / "m.nii")).slice_thickness_cm == pytest.approx(0.25)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "bare.nii")  # no unit, unit zooms: no spacing
    with pytest.raises(InputError, match="records no pixel size"):
        image_file(str(tmp_path / "bare.nii"))


def _read_back(folder: Path) -> list:
    return sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: int(d.InstanceNumber))


def test_series_round_trip_keeps_geometry_with_new_uids(tmp_path: Path) -> None:
    hu = series_hu(4, 6, 6)
    hu[1, 2, 3] = 2500.7  # rounds to 2501 HU
    write_series(tmp_path / "src", hu, gap=2.0)
    scan = read_volume(tmp_path / "src")
    written = write_dicom_series(tmp_path / "out", scan.image, geometry=scan.dicom, description="test")
    assert [p.name for p in written] == sorted(p.name for p in (tmp_path / "out").iterdir())
    back = read_volume(tmp_path / "out")
    np.testing.assert_allclose(mu_to_hu(back.image), mu_to_hu(scan.image), atol=0.5 + 1e-3)  # int16 rounding
    np.testing.assert_allclose(back.dicom.positions_mm, scan.dicom.positions_mm, atol=1e-5)
    np.testing.assert_allclose(back.dicom.orientation, scan.dicom.orientation, atol=1e-8)
    assert back.spacing_mm == scan.spacing_mm and back.slice_mm == pytest.approx(2.0, abs=1e-5)
    source, out = _read_back(tmp_path / "src"), _read_back(tmp_path / "out")
    assert len({d.SeriesInstanceUID for d in out}) == 1 and out[0].SeriesInstanceUID != source[0].SeriesInstanceUID
    sops = {d.SOPInstanceUID for d in out}
    assert len(sops) == 4 and not sops & {d.SOPInstanceUID for d in source}
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID"):
        assert out[0].get(keyword) == source[0].get(keyword), keyword
    assert list(out[0].ImageType)[:2] == ["DERIVED", "SECONDARY"] and out[0].pixel_array.dtype == np.int16
    assert float(out[0].SliceThickness) == 5.0
    with pytest.raises(InputError, match="already exists"):
        write_dicom_series(tmp_path / "out", scan.image, geometry=scan.dicom)
    assert sorted((tmp_path / "out").iterdir()) == written and len(list(tmp_path.iterdir())) == 2  # no leftovers


def test_padded_slice_cropped_back_and_fresh_study(tmp_path: Path) -> None:
    hu = series_hu(3)
    write_series(tmp_path / "s", hu)
    truth = image_file(str(tmp_path / "s"))  # 6x8 padded to 8x8
    write_dicom_series(tmp_path / "o", truth.image[0, 0].numpy(), geometry=truth.dicom)
    back = read_slice(tmp_path / "o")
    assert back.image.shape == (6, 8)
    np.testing.assert_allclose(mu_to_hu(back.image), hu[1], atol=0.5 + 1e-3)
    np.testing.assert_allclose(back.dicom.positions_mm, truth.dicom.positions_mm, atol=1e-5)
    volume = hu_to_mu(series_hu(3, 6, 6))
    write_dicom_series(tmp_path / "fresh", volume, pixel_size_mm=2.0, slice_thickness_mm=5.0)
    scan = read_volume(tmp_path / "fresh")
    assert scan.spacing_mm == (2.0, 2.0) and scan.slice_mm == pytest.approx(5.0)
    np.testing.assert_allclose(mu_to_hu(scan.image), mu_to_hu(volume), atol=0.5 + 1e-3)
    wide = np.full((2, 2), 40000.0)
    wide[0, 0] = -1000.0
    write_dicom_series(tmp_path / "wide", wide, pixel_size_mm=1.0, units="hu")  # beyond int16 at 1 HU
    np.testing.assert_allclose(mu_to_hu(read_slice(tmp_path / "wide").image), wide, atol=1.0)
    with pytest.raises(InputError, match="pixel_size_mm"):
        write_dicom_series(tmp_path / "nosize", volume)


def test_run_writes_a_dicom_series_per_method(tmp_path: Path, capsys) -> None:
    from recon.app import main

    hu = np.stack([np.where(np.hypot(*np.mgrid[-16:16, -16:16]) < 12, 40.0, -1000.0)] * 3)
    write_series(tmp_path / "s", hu, orientation=(1, 0, 0, 0, 1, 0), spacing=(6.0, 6.0))
    run = tmp_path / "run"
    assert main(["run", "data=file", f"data.path={tmp_path / 's'}", "operator.views=8", "baselines=[fbp]",
                 "samplers=[]", f"hydra.run.dir={run}"]) == 0
    source = read_slice(tmp_path / "s")
    back = read_slice(run / "recon_fbp_dicom")
    np.testing.assert_allclose(back.dicom.positions_mm, source.dicom.positions_mm, atol=1e-5)
    (written,) = _read_back(run / "recon_fbp_dicom")  # raw HU: the reader would clip below -1024 HU
    stored_hu = written.pixel_array * float(written.RescaleSlope) + float(written.RescaleIntercept)
    np.testing.assert_allclose(stored_hu, mu_to_hu(load_image(run / "recon_fbp.nii.gz")), atol=0.5 + 1e-3)
    assert written.SeriesDescription == "recon sparse_ct fbp"
    assert json.loads((run / "metrics.json").read_text())["methods"]["fbp"]["psnr"] > 15
