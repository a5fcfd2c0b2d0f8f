"""Anatomical head phantoms (recon.data.anatomy): tissue values, held-out split, volumes, sources."""

import numpy as np
import pytest

from operators.ct import MU_WATER
from recon.data import anatomy
from recon.errors import ConfigError


def hu(mu):
    return (np.asarray(mu) / MU_WATER - 1.0) * 1000.0


@pytest.fixture(scope="module")
def slices():
    return [anatomy.head_slice("test", i, 128, 2.0) for i in range(3)]


def test_slices_are_seeded_and_split(slices):
    again = anatomy.head_slice("test", 0, 128, 2.0)
    assert np.array_equal(again, slices[0])
    train = anatomy.head_slice("train", 0, 128, 2.0)
    assert not np.allclose(train, slices[0])


def test_held_out_levels_never_reach_training():
    rng = np.random.default_rng(0)
    assert all(anatomy.level_band(anatomy._draw_level(rng, "train")) == "train" for _ in range(200))
    levels = [anatomy._draw_level(rng, "test") for _ in range(50)]
    assert all(any(lo <= z < hi for lo, hi in anatomy.TEST_BANDS_MM) for z in levels)


def test_tissues_have_ct_values(slices):
    for image in slices:
        values = hu(image)
        assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() < 0.5  # the prior's range
        assert np.mean(values < -990) > 0.3  # air around the head
        assert (values > 900).sum() > 100  # cortical skull
        brain = values[(values > 15) & (values < 50)]
        assert brain.size > 500  # grey and white matter (128 px of 2 mm)
        assert np.percentile(brain, 90) - np.percentile(brain, 10) > 5  # grey (34-44 HU) and white (22-30 HU)


def test_grey_white_contrast_is_visible_in_a_mid_brain_slice():
    image = hu(anatomy.head_slice("train", 3, 256, 1.0))
    brain = image[(image > 10) & (image < 60)]
    low, high = np.percentile(brain, [20, 80])
    assert 5.0 < high - low < 25.0  # grey-white contrast is 5-20 HU in head CT


def test_volume_is_isotropic_and_continuous():
    volume = anatomy.head_volume("test", 0, size=48, voxel_mm=4.5)
    assert volume.shape == (48, 48, 48) and volume.dtype == np.float32
    middle = volume[20:28]
    step = np.abs(np.diff(middle, axis=0)).mean()
    across = np.abs(middle[0] - volume[5]).mean()
    assert step < 0.5 * across  # neighbouring slices resemble each other more than distant ones


def test_sources_carry_the_pixel_size_and_reject_bad_requests():
    source = anatomy.head_source(split="test", index=1, size=64, field_of_view_cm=25.6)
    assert source.image.shape == (1, 1, 64, 64) and source.pixel_size_cm == pytest.approx(0.4)
    volume = anatomy.volume_source(size=32, field_of_view_cm=19.2)
    assert volume.image.shape == (1, 1, 32, 32, 32) and volume.slice_thickness_cm == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="split"):
        anatomy.head_source(split="validation")
    with pytest.raises(ConfigError, match="size"):
        anatomy.head_source(size=8)


def _tissue_centre_row(image: np.ndarray) -> float:
    tissue = hu(image) > -500
    return float((tissue * np.arange(image.shape[0])[:, None]).sum() / max(tissue.sum(), 1))


def test_coronal_slices_are_oriented_as_the_volumes_coronal_planes():
    """Coronal training slices (a perpendicular prior's data) must look like ``volume[:, r, :]``: rows
    from inferior to superior, the head's centre below the field's (measured: row 28.3 of 64 over
    12 training slices, 27.0 over a test volume's planes; upside down it would be 35-36); and their
    own seed stream, so coronal slice i is not axial slice i's head."""
    volume = anatomy.head_volume("test", 0, size=64, voxel_mm=250 / 64)
    planes = [volume[:, r, :] for r in range(64) if (hu(volume[:, r, :]) > -500).sum() > 400]
    coronal = [anatomy.head_slice("train", i, 64, 250 / 64, plane="coronal") for i in range(16)]
    heads = [image for image in coronal if (hu(image) > -500).sum() > 400]  # planes through the head
    assert len(heads) >= 8
    in_volume = np.mean([_tissue_centre_row(image) for image in planes])
    assert abs(np.mean([_tissue_centre_row(image) for image in heads]) - in_volume) < 2.5
    assert abs(np.mean([_tissue_centre_row(image[::-1]) for image in heads]) - in_volume) > 5.0
    assert np.array_equal(coronal[0], anatomy.head_slice("train", 0, 64, 250 / 64, plane="coronal"))
    assert not np.allclose(coronal[0], anatomy.head_slice("train", 0, 64, 250 / 64))
    with pytest.raises(ValueError, match="plane"):
        anatomy.head_slice("train", 0, 64, 4.0, plane="oblique")
