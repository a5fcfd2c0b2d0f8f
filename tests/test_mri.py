"""Multi-coil MRI operator: adjointness, agreement with sigpy's SENSE linop, autograd, batching;
coil maps: birdcage normalisation and ESPIRiT recovery."""

import numpy as np
import pytest
import torch

from operators import MultiCoilMRI, birdcage_maps, espirit_maps, fft2c, ifft2c, inner, random_mask

H, W, C = 24, 20, 4


def crandn(shape, seed, dtype=torch.complex64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture
def op():
    return MultiCoilMRI(crandn((C, H, W), 0), random_mask(W, 4, seed=1).mask)


def test_fft_helpers_are_centred_and_unitary():
    x = crandn((2, 3, H, W), 5, torch.complex128)
    assert torch.allclose(ifft2c(fft2c(x)), x, atol=1e-12)
    assert torch.allclose(fft2c(x).norm(), x.norm())
    ones = torch.ones(H, W, dtype=torch.complex128)
    k = fft2c(ones)  # a constant image puts all its energy at the DC index (H // 2, W // 2)
    assert torch.isclose(k[H // 2, W // 2].abs(), torch.tensor(float(np.sqrt(H * W)), dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_adjoint_identity(op, dtype):
    x, y = crandn((3, *op.in_shape), 2, dtype), crandn((3, *op.out_shape), 3, dtype)
    lhs, rhs = inner(op(x), y), inner(x, op.adjoint(y))
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    assert ((lhs - rhs).abs() / lhs.abs()).max() < tol


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_sigpy_sense(weighted):
    sp_mri = pytest.importorskip("sigpy.mri")
    maps = crandn((C, H, W), 4)  # the operator stores complex64 maps; sigpy gets the same values
    # sigpy multiplies by sqrt(weights); our mask multiplies as is, so fractional masks compare
    # with weights = mask ** 2 (0/1 masks are the same either way).
    mask = torch.rand(H, W, generator=torch.Generator().manual_seed(6)) if weighted \
        else random_mask(W, 4, seed=2).mask.expand(H, W)
    sense = sp_mri.linop.Sense(maps.numpy().astype(np.complex128), weights=(mask.double() ** 2).numpy())
    op = MultiCoilMRI(maps, mask)
    x, y = crandn((1, 1, H, W), 7, torch.complex128), crandn((1, C, H, W), 8, torch.complex128)
    ref_fwd, ref_adj = sense(x[0, 0].numpy()), sense.H(y[0].numpy())
    for dtype, tol in ((torch.complex128, 1e-12), (torch.complex64, 1e-6)):
        ours_fwd, ours_adj = op(x.to(dtype))[0].numpy(), op.adjoint(y.to(dtype))[0, 0].numpy()
        assert np.linalg.norm(ours_fwd - ref_fwd) / np.linalg.norm(ref_fwd) < tol
        assert np.linalg.norm(ours_adj - ref_adj) / np.linalg.norm(ref_adj) < tol


def test_autograd_gives_the_data_term_gradient(op):
    x = crandn((2, *op.in_shape), 9).requires_grad_()
    y = crandn((2, *op.out_shape), 10)
    loss = (op(x) - y).abs().square().sum()
    loss.backward()
    # torch's gradient of a real loss w.r.t. complex x is dL/d(conj x) * 2 = 2 A^H (A x - y)
    expected = 2 * op.adjoint(op(x.detach()) - y)
    assert torch.allclose(x.grad, expected, atol=1e-4)


def test_per_sample_maps_and_masks():
    maps = crandn((2, C, H, W), 11)
    masks = torch.stack([random_mask(W, 4, seed=s).mask.expand(H, W) for s in (0, 1)]).unsqueeze(1)
    batched = MultiCoilMRI(maps, masks)
    x = crandn((2, 1, H, W), 12)
    y = batched(x)
    assert y.shape == (2, C, H, W)
    for b in range(2):
        single = MultiCoilMRI(maps[b], masks[b, 0])
        assert torch.allclose(y[b : b + 1], single(x[b : b + 1]))
        assert torch.allclose(batched.adjoint(y)[b : b + 1], single.adjoint(y[b : b + 1]), atol=1e-6)
    with pytest.raises(ValueError):
        MultiCoilMRI(maps, torch.ones(W + 1))


def test_fully_sampled_normal_operator_is_identity_for_normalised_maps():
    maps = birdcage_maps(C, (H, W))
    assert torch.allclose(maps.abs().square().sum(0), torch.ones(H, W), atol=1e-5)
    op = MultiCoilMRI(maps, torch.ones(W))
    x = crandn((1, 1, H, W), 13)
    assert torch.allclose(op.normal(x), x, atol=1e-5)


def test_espirit_recovers_birdcage_maps():
    pytest.importorskip("sigpy")
    pytest.importorskip("threadpoolctl")
    n = 40
    yy, xx = np.mgrid[:n, :n]
    inside = (yy - n / 2) ** 2 / (0.38 * n) ** 2 + (xx - n / 2) ** 2 / (0.3 * n) ** 2 < 1
    image = torch.from_numpy(inside * (1 + 0.3 * np.sin(xx / 3))).to(torch.complex64)
    truth = birdcage_maps(8, (n, n))
    estimate = espirit_maps(fft2c(truth * image), calib_width=20, max_iter=30)
    assert estimate.shape == truth.shape and estimate.dtype == torch.complex64
    # per-pixel |<S_est, S_true>| is 1 when the maps agree up to a per-pixel phase
    agreement = (estimate.conj() * truth).sum(0).abs().numpy()
    assert agreement[inside].min() > 0.999
    assert np.allclose(estimate.abs().square().sum(0).numpy()[inside], 1, atol=1e-5)
