"""Non-Cartesian MRI: the NUFFT against a direct non-uniform DFT and fft2c, exact adjoints, autograd, trajectories, density weights, bad input."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from operators import (MultiCoilMRI, NonCartesianMRI, adjoint_error, birdcage_maps, density_gain, golden_angle_radial,
                       pipe_menon_density, radial_density, variable_density_spiral)
from operators.nufft import NufftPlan


def direct_dft(traj: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``sum_{h,w} f[h, w] exp(-i (k_y (h - H//2) + k_x (w - W//2))) / sqrt(H W)``, by brute force."""
    height, width = image.shape[-2:]
    hy = (torch.arange(height) - height // 2).double()
    wx = (torch.arange(width) - width // 2).double()
    phase = traj[:, 0, None, None].double() * hy[:, None] + traj[:, 1, None, None].double() * wx[None, :]
    return torch.einsum("mhw,nhw->nm", torch.exp(-1j * phase), image.to(torch.complex128)) / math.sqrt(height * width)


@pytest.mark.parametrize("shape", [(12, 10), (9, 13)])
def test_nufft_matches_direct_dft(shape):
    gen = torch.Generator().manual_seed(0)
    traj = (torch.rand(41, 2, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    image = torch.randn(2, *shape, dtype=torch.complex128, generator=gen)
    plan = NufftPlan(traj, shape, eps=1e-12)
    direct = direct_dft(traj, image)
    assert (plan.forward(image) - direct).abs().max() < 1e-10 * direct.abs().max()
    samples = torch.randn(2, 41, dtype=torch.complex128, generator=gen)
    adjoint = torch.einsum("nm,mhw->nhw", samples, direct_dft(traj, torch.eye(shape[0] * shape[1]).reshape(-1, *shape)).T
                           .reshape(41, *shape).conj())
    assert (plan.adjoint(samples) - adjoint).abs().max() < 1e-10 * adjoint.abs().max()


def test_cartesian_trajectory_is_the_cartesian_operator():
    height, width = 16, 12
    ky = 2 * math.pi * (torch.arange(height) - height // 2) / height
    kx = 2 * math.pi * (torch.arange(width) - width // 2) / width
    grid = torch.stack(torch.meshgrid(ky, kx, indexing="ij"), dim=-1)
    maps = birdcage_maps(4, (height, width))
    x = torch.randn(3, 1, height, width, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    nc, cart = NonCartesianMRI(maps, grid, eps=1e-6), MultiCoilMRI(maps, torch.ones(width))
    expected = cart(x)
    assert (nc(x) - expected).abs().max() < 1e-5 * expected.abs().max()
    assert (nc.adjoint(expected) - cart.adjoint(expected)).abs().max() < 1e-5 * x.abs().max()


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_adjoint_identity_batched_per_sample_maps(dtype):
    gen = torch.Generator().manual_seed(2)
    maps = torch.randn(2, 3, 20, 24, dtype=torch.complex64, generator=gen)
    op = NonCartesianMRI(maps, golden_angle_radial(7, 40))
    x = torch.randn(2, 1, 20, 24, dtype=dtype, generator=gen)
    y = torch.randn(2, 3, 7, 40, dtype=dtype, generator=gen)
    assert op(x).shape == (2, 3, 7, 40) and op(x).dtype == dtype
    tolerance = 1e-6 if dtype == torch.complex64 else 1e-9  # FINUFFT's spread and interpolation share one kernel
    assert adjoint_error(op, op.adjoint, x, y) < tolerance


def test_autograd_is_the_adjoint():
    op = NonCartesianMRI(birdcage_maps(4, (16, 16)), variable_density_spiral(3, 16, samples=90))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 16, 16, dtype=torch.complex64, generator=gen).requires_grad_(True)
    y = torch.randn(2, 4, 3, 90, dtype=torch.complex64, generator=gen)
    (op(x) - y).abs().square().sum().backward()
    expected = 2 * op.adjoint(op(x.detach()) - y)
    assert (x.grad - expected).abs().max() < 1e-4 * expected.abs().max()
    z = y.clone().requires_grad_(True)
    op.adjoint(z).abs().square().sum().backward()
    expected = 2 * op(op.adjoint(y))
    assert (z.grad - expected).abs().max() < 1e-4 * expected.abs().max()


def test_operator_pickles_without_its_plans():
    op = NonCartesianMRI(birdcage_maps(2, (16, 16)), golden_angle_radial(5, 32))
    x = torch.randn(1, 1, 16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(4))
    expected = op(x)
    copy = pickle.loads(pickle.dumps(op))
    assert torch.equal(copy(x), expected)


def test_golden_angle_radial_geometry():
    traj = golden_angle_radial(5, 8)
    assert traj.shape == (5, 8, 2)
    assert torch.allclose(traj[:, 4], torch.zeros(5, 2))  # sample N/2 is the centre
    assert traj.norm(dim=-1).max() <= math.pi + 1e-6
    angles = torch.atan2(traj[:, 0, 0], traj[:, 0, 1])  # the first sample points at angle + pi
    step = (angles[1] - angles[0]) % (2 * math.pi)
    assert math.isclose(float(step), math.pi / ((1 + math.sqrt(5)) / 2), rel_tol=1e-5)  # 111.25 deg


def test_spiral_meets_its_edge_spacing():
    n, interleaves, acceleration = 64, 4, 2.0
    traj = variable_density_spiral(interleaves, n, acceleration=acceleration)
    assert traj.norm(dim=-1).max() == pytest.approx(math.pi, rel=1e-5)
    along = (traj[:, 1:] - traj[:, :-1]).norm(dim=-1)
    assert float(along.max()) <= 2 * math.pi / n * 1.001  # Nyquist along each arm
    radius = traj.norm(dim=-1)
    inner = radius < math.pi / 4
    assert float(inner.float().mean()) > 0.4  # variable density: t^2 puts half the samples inside 1/4 of kmax


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_density_weights_keep_intensity(shape):
    traj = golden_angle_radial(24, 2 * max(shape))
    analytic = radial_density(traj, shape)
    assert density_gain(traj, analytic, shape) == pytest.approx(1.0, abs=0.02)
    iterative = pipe_menon_density(traj, shape)
    assert density_gain(traj, iterative, shape) == pytest.approx(1.0, abs=1e-6)
    # Where the spokes are denser than the grid (|k| < 2 spokes / N rad) and away from the centre
    # sample, the spoke-averaged weights agree on the |k| ramp; further out the spokes are
    # undersampled and Pipe-Menon's weights saturate, as they should.
    radius = traj[0].norm(dim=-1)
    dense = (radius > 0.15 * math.pi) & (radius < 0.4 * math.pi)
    ratio = iterative.mean(0)[dense] / analytic.mean(0)[dense]
    assert float((ratio - 1).abs().max()) < 0.03


def test_gridding_reconstructs_a_smooth_image():
    n = 48
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    image = torch.exp(-(yy**2 + xx**2) / (2 * 6.0**2)).to(torch.complex64)[None, None]
    traj = golden_angle_radial(80, 2 * n)  # above Nyquist (pi N / 2 = 75 spokes)
    maps = torch.ones(1, n, n, dtype=torch.complex64)
    op = NonCartesianMRI(maps, traj, density=radial_density(traj, (n, n)))
    error = (op.gridding(op(image)) - image).abs().max()
    assert error < 0.03 * image.abs().max()
    plain = NonCartesianMRI(maps, traj)
    assert (plain.gridding(op(image)) - image).abs().max() > 10 * error  # the weights matter


@pytest.mark.parametrize(("traj", "match"), [
    (torch.full((4, 2), 4.0), "outside"),
    (torch.ones(4, 3), r"\(\.\.\., 2\)"),
    (torch.ones(4, 2, dtype=torch.complex64), "real"),
    (torch.tensor([[0.0, float("nan")]]), "NaN"),
])
def test_bad_trajectories_are_refused(traj, match):
    with pytest.raises(ValueError, match=match):
        NonCartesianMRI(torch.ones(2, 8, 8, dtype=torch.complex64), traj)


def test_bad_maps_and_density_are_refused():
    traj = golden_angle_radial(3, 16)
    with pytest.raises(ValueError, match="sens_maps"):
        NonCartesianMRI(torch.ones(8, 8, dtype=torch.complex64), traj)
    with pytest.raises(ValueError, match="density"):
        NonCartesianMRI(torch.ones(2, 8, 8, dtype=torch.complex64), traj, density=torch.ones(3, 15))
    with pytest.raises(ValueError, match=">= 0"):
        NonCartesianMRI(torch.ones(2, 8, 8, dtype=torch.complex64), traj, density=-torch.ones(3, 16))


def test_espirit_maps_from_the_radial_centre_match_the_true_maps():
    from operators import noncartesian_espirit_maps

    n = 96
    yy, xx = torch.meshgrid(torch.arange(n) - n / 2, torch.arange(n) - n / 2, indexing="ij")
    inside = (yy / 36) ** 2 + (xx / 30) ** 2 < 1
    image = (inside * (1 + 0.3 * torch.sin(xx / 5))).to(torch.complex64)[None, None]
    maps, traj = birdcage_maps(6, (n, n)), golden_angle_radial(48, 2 * n)
    gen = torch.Generator().manual_seed(5)
    y = NonCartesianMRI(maps, traj)(image) + 1e-3 * torch.randn(1, 6, 48, 2 * n, dtype=torch.complex64, generator=gen)
    estimate = noncartesian_espirit_maps(y[0], traj, (n, n), calib_width=24)
    agreement = (estimate.conj() * maps).sum(dim=0).abs()  # 1 where equal up to a common phase
    assert float(agreement[inside].min()) > 0.97  # measured 0.988
    with pytest.raises(ValueError, match="do not match"):
        noncartesian_espirit_maps(y[0, :, :10], traj, (n, n))
