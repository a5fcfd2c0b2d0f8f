import pytest
import torch

from operators import Identity, MatrixOperator
from recon.baselines.tv import TV, gradient, gradient_adjoint, total_variation
from recon.metrics import psnr


def blocky_image(size=32):
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[..., 8:24, 6:20] = 1.0
    x[..., 4:12, 18:28] = 0.5
    return x


def test_gradient_adjoint_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 9, 11, generator=g, dtype=torch.float64)
    q = torch.randn(2, 1, 2, 9, 11, generator=g, dtype=torch.float64)
    assert torch.allclose((gradient(x) * q).sum(), (x * gradient_adjoint(q)).sum())


def objective(x, y, op, weight):
    return 0.5 * (op(x) - y).pow(2).sum() + weight * total_variation(x).sum()


def test_zero_weight_identity_returns_the_data():
    y = blocky_image() + 0.3
    x = TV(weight=0.0, iterations=200)(y, Identity((1, 32, 32)))
    assert torch.allclose(x, y, atol=1e-6)


def test_tv_denoising_improves_and_is_a_minimiser():
    truth = blocky_image()
    g = torch.Generator().manual_seed(1)
    y = truth + 0.2 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    op = Identity((1, 32, 32))
    weight = 0.15
    x = TV(weight=weight, iterations=1000)(y, op)
    assert psnr(x, truth) > psnr(y, truth) + 6
    best = objective(x, y, op, weight)
    assert best <= objective(truth, y, op, weight)
    for seed in range(5):
        d = torch.randn(truth.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert best <= objective((x + 1e-3 * d).clamp_min(0), y, op, weight) + 1e-9


def test_tv_on_an_underdetermined_operator_beats_least_squares():
    truth = blocky_image(16)
    g = torch.Generator().manual_seed(2)
    matrix = torch.randn(150, 256, generator=g, dtype=torch.float64) / 16
    op = MatrixOperator(matrix, in_shape=(1, 16, 16), out_shape=(150,))
    y = op(truth)
    x = TV(weight=1e-3, iterations=3000)(y, op)
    min_norm = op.adjoint(torch.linalg.lstsq(matrix @ matrix.T, y.T).solution.T)
    assert psnr(x, truth) > psnr(min_norm, truth) + 10


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        TV(weight=-1.0)
