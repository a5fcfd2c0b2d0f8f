import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from recon.metrics import evaluate, nmse, psnr, ssim


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
    assert set(evaluate(recon, target)) == {"psnr", "ssim", "nmse"}


def test_shape_mismatch_is_an_error(pair):
    recon, target = pair
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(recon[:2], target)
