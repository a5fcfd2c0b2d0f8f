"""fastMRI HDF5 reading (validation, lazy slices, header) and submission-layout writing."""

import os

import h5py
import numpy as np
import pytest
import torch

from recon.errors import InputError
from recon.io.fastmri import center_crop, ismrmrd_header, read_fastmri, rss, write_reconstruction

S, C, H, W = 3, 2, 16, 8


def kspace(dtype=np.complex64):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((S, C, H, W)) + 1j * rng.standard_normal((S, C, H, W))).astype(dtype)


def write(path, **datasets):
    attrs = datasets.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
        f.attrs.update(attrs)
    return path


@pytest.fixture
def good(tmp_path):
    return write(
        tmp_path / "file_brain_001.h5",
        kspace=kspace(),
        mask=np.r_[np.zeros(4), np.ones(4)].astype(bool),
        reconstruction_rss=np.ones((S, 8, 8), np.float32),
        ismrmrd_header=ismrmrd_header((H, W, 1), (8, 8, 1)),
        attrs={"acquisition": "AXT1", "max": 2.5, "norm": 10.0, "patient_id": "abc"},
    )


def test_reads_metadata_and_slices_lazily(good):
    volume = read_fastmri(good)
    assert volume.kspace_shape == (S, C, H, W) and volume.num_slices == S and volume.num_coils == C
    assert volume.encoding_size == (H, W, 1) and volume.recon_size == (8, 8, 1)
    assert volume.crop_size == (8, 8)
    assert volume.mask.dtype == np.float32 and volume.mask.tolist() == [0] * 4 + [1] * 4
    assert volume.attrs == {"acquisition": "AXT1", "max": 2.5, "norm": 10.0, "patient_id": "abc"}
    assert volume.has_target and volume.target(1).shape == (8, 8)
    slice_1 = volume.kspace(1)
    assert slice_1.dtype == np.complex64 and np.array_equal(slice_1, kspace()[1])
    with pytest.raises(IndexError):
        volume.kspace(S)


def test_without_optional_datasets_uses_fastmri_crop(tmp_path):
    volume = read_fastmri(write(tmp_path / "bare.h5", kspace=kspace(np.complex128)))
    assert volume.mask is None and volume.recon_size is None and volume.crop_size == (320, 320)
    assert volume.kspace(0).dtype == np.complex64
    with pytest.raises(InputError, match="reconstruction_rss"):
        volume.target(0)


def test_nan_slice_is_reported_when_read(tmp_path):
    data = kspace()
    data[2, 1, 3, 4] = np.nan
    volume = read_fastmri(write(tmp_path / "nan.h5", kspace=data))
    volume.kspace(0)
    with pytest.raises(InputError, match=r"nan\.h5: kspace slice 2 holds NaN or Inf"):
        volume.kspace(2)


@pytest.mark.parametrize("datasets, problem", [
    ({"image": np.zeros(3)}, "no 'kspace' dataset"),
    ({"kspace": kspace()[0]}, "single-coil"),
    ({"kspace": kspace()[None]}, "must be \\(slices, coils, H, W\\)"),
    ({"kspace": kspace().real}, "must be complex"),
    ({"kspace": kspace(), "mask": np.ones(W + 1)}, "mask must have shape"),
    ({"kspace": kspace(), "ismrmrd_header": b"<not xml"}, "not valid XML"),
    ({"kspace": kspace(), "ismrmrd_header": b"<ismrmrdHeader/>"}, "lacks a valid encoding/encodedSpace"),
])
def test_bad_files_raise_input_error(tmp_path, datasets, problem):
    path = write(tmp_path / "bad.h5", **datasets)
    with pytest.raises(InputError, match=problem) as info:
        read_fastmri(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_not_hdf5_and_truncated_files(tmp_path, good):
    with pytest.raises(InputError, match="file not found"):
        read_fastmri(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(InputError, match="not an HDF5 file"):
        read_fastmri(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_fastmri(truncated)


def test_center_crop_and_rss_follow_fastmri():
    image = torch.arange(7 * 6).reshape(7, 6)
    assert center_crop(image, (3, 4)).tolist() == image[2:5, 1:5].tolist()
    assert center_crop(image.numpy(), (7, 6)).shape == (7, 6)
    with pytest.raises(ValueError):
        center_crop(image, (8, 2))
    coils = torch.tensor([[3.0 + 0j], [4j]])
    assert rss(coils).tolist() == [5.0] and rss(coils.numpy()).tolist() == [5.0]


def test_write_reconstruction_submission_layout(tmp_path):
    images = torch.randn(S, 12, 10, dtype=torch.complex64)
    target = tmp_path / "out" / "file_brain_001.h5"
    target.parent.mkdir()
    target.write_bytes(b"old")  # replaced atomically
    write_reconstruction(target, images, method="dds", crop_size=(8, 8), mask=torch.ones(W),
                         acceleration=4, center_fraction=0.08)
    assert sorted(p.name for p in target.parent.iterdir()) == ["file_brain_001.h5"]
    with h5py.File(target) as f:
        recon = f["reconstruction"][()]
        assert recon.dtype == np.float32 and recon.shape == (S, 8, 8)
        assert np.allclose(recon, images.abs()[:, 2:10, 1:9].numpy())
        assert f["mask"].dtype == np.float32 and f["mask"].shape == (W,)
        assert dict(f.attrs) == {"method": "dds", "acceleration": 4, "center_fraction": 0.08}
    write_reconstruction(target, np.ones((1, 4, 4)), method="zf")  # crop clipped to the image
    with h5py.File(target) as f:
        assert f["reconstruction"].shape == (1, 4, 4) and "mask" not in f and set(f.attrs) == {"method"}
