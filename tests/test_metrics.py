import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from recon.metrics import evaluate, nmse, object_mask, psnr, ssim, z_psnr


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    target = rng.random((3, 40, 48)) + np.linspace(0, 1, 48)
    recon = target + 0.1 * rng.standard_normal(target.shape)
    return recon, target


def test_ssim_matches_scikit_image_per_slice(pair):
    recon, target = pair
    peak = target.max()
    expected = np.mean(
        [structural_similarity(target[i], recon[i], data_range=peak, win_size=7) for i in range(3)]
    )
    assert ssim(recon, target) == pytest.approx(expected, abs=1e-10)


def test_psnr_matches_scikit_image_with_target_max(pair):
    recon, target = pair
    expected = peak_signal_noise_ratio(target, recon, data_range=target.max())
    assert psnr(recon, target) == pytest.approx(expected, rel=1e-12)


def test_nmse_and_perfect_reconstruction(pair):
    recon, target = pair
    assert nmse(recon, target) == pytest.approx(np.sum((recon - target) ** 2) / np.sum(target**2))
    assert psnr(target, target) == math.inf
    assert ssim(target, target) == pytest.approx(1.0)
    assert set(evaluate(recon, target)) == {"psnr", "ssim", "ssim_object", "nmse"}


def test_shape_mismatch_is_an_error(pair):
    recon, target = pair
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(recon[:2], target)


def test_z_psnr_scores_slice_to_slice_disagreement():
    rng = np.random.default_rng(1)
    target = rng.random((1, 1, 12, 40, 40))
    independent = target + 0.05 * rng.standard_normal(target.shape)
    shared = target + 0.05 * rng.standard_normal((1, 1, 1, 40, 40))  # one error pattern in every slice
    diff = np.diff(independent, axis=2) - np.diff(target, axis=2)
    assert z_psnr(independent, target) == pytest.approx(10 * np.log10(target.max() ** 2 / np.mean(diff**2)), rel=1e-12)
    # iid errors: the differences have twice the variance, so z-PSNR sits 3 dB below PSNR
    assert z_psnr(independent, target) == pytest.approx(psnr(independent, target) - 10 * np.log10(2), abs=0.1)
    assert z_psnr(shared, target) > 200 and psnr(shared, target) < 30  # rounding error only
    assert set(evaluate(independent, target)) == {"psnr", "ssim", "ssim_object", "nmse", "z_psnr"}
    with pytest.raises(ValueError, match="D >= 2"):
        z_psnr(target[:, :, :1], target[:, :, :1])


def test_ssim_inside_the_object_ignores_the_background():
    """A disk on a noise floor: a reconstruction with a zero background loses whole-image SSIM
    but keeps object SSIM; with a mask of everything it equals the plain SSIM."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:64, :64] - 32
    disk = ((yy**2 + xx**2) < 20**2).astype(float)
    hole = ((yy**2 + xx**2) < 4**2)
    target = disk * (1 - 0.9 * hole) + 0.03 * np.abs(rng.standard_normal((64, 64)))  # noise-floor background
    recon = disk * (1 - 0.9 * hole) + 0.02 * rng.standard_normal((64, 64)) * disk  # exactly 0 outside
    mask = object_mask(target)
    assert mask.shape == (64, 64) and bool(mask[32, 32])  # the dark hole is filled
    assert not bool(mask[0, 0]) and bool(mask[32, 32 + 22])  # grown by 3 pixels past the edge, not to the corner
    whole, inside = ssim(recon, target), ssim(recon, target, mask=mask)
    assert inside > whole + 0.2
    assert ssim(recon, target, mask=np.ones((64, 64), bool)) == pytest.approx(whole, abs=1e-12)
