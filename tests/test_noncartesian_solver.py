"""Preconditioned CG for non-Cartesian MRI: the circulant preconditioner against its brute-force definition, and PCG against CG."""

from __future__ import annotations

import pytest
import torch

from operators import NonCartesianMRI, birdcage_maps, golden_angle_radial
from operators.cg import conjugate_gradient


def brute_force_circulant(traj: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The Frobenius-nearest doubly circulant matrix to the single-coil ``A^H A``, by definition:
    the mean of ``A^H A``'s entries over each wrapped lag ``(n - m) mod (H, W)``; returns its spectrum."""
    height, width = shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten().double(), xs.flatten().double()
    k = traj.reshape(-1, 2).double()
    phase = k[:, 0, None] * ys[None] + k[:, 1, None] * xs[None]                  # (M, N)
    basis = torch.exp(-1j * phase) / (height * width) ** 0.5
    normal = basis.conj().T @ basis                                               # (A^H A)[n, m]
    lag_y = (ys[:, None] - ys[None]).remainder(height).long()
    lag_x = (xs[:, None] - xs[None]).remainder(width).long()
    index = (lag_y * width + lag_x).flatten()
    total = torch.zeros(height * width, dtype=torch.complex128).index_add_(0, index, normal.flatten())
    counts = torch.zeros(height * width, dtype=torch.float64).index_add_(0, index, torch.ones(index.numel(), dtype=torch.float64))
    return torch.fft.fft2((total / counts).reshape(height, width)).real


@pytest.mark.parametrize("shape", [(12, 12), (9, 14)])
def test_circulant_spectrum_is_the_nearest_circulant(shape):
    traj = golden_angle_radial(6, 2 * shape[1])
    operator = NonCartesianMRI(torch.ones(1, *shape, dtype=torch.complex64), traj, eps=1e-9)
    expected = brute_force_circulant(traj, shape)
    got = operator._circulant_spectrum.double()
    assert (got - expected.clamp_min(0)).abs().max() < 1e-5 * expected.abs().max()
    assert abs(float(got.mean()) - traj.shape[0] * traj.shape[1] / (shape[0] * shape[1])) < 1e-5  # t(0) = M / (H W)


def radial_problem(mu: float):
    gen = torch.Generator().manual_seed(0)
    operator = NonCartesianMRI(birdcage_maps(8, (48, 48)), golden_angle_radial(12, 96), eps=1e-6)
    truth = torch.randn(1, 1, 48, 48, dtype=torch.complex64, generator=gen)
    rhs = operator.adjoint(operator(truth))
    exact = conjugate_gradient(lambda v: operator.normal(v) + mu * v, rhs, iterations=400)
    return operator, rhs, exact


def test_preconditioned_cg_reaches_the_same_solution_faster():
    mu = 0.1
    operator, rhs, exact = radial_problem(mu)

    def error(iterations: int, preconditioner=None) -> float:
        x = conjugate_gradient(lambda v: operator.normal(v) + mu * v, rhs, iterations=iterations,
                               preconditioner=preconditioner)
        return float((x - exact).norm() / exact.norm())

    plain, preconditioned = error(15), error(15, operator.preconditioner(mu))
    assert preconditioned < 0.15 * plain, (plain, preconditioned)  # measured 0.0024 against 0.039
    assert error(200, operator.preconditioner(mu)) < 1e-4           # same fixed point


def test_identity_preconditioner_is_plain_cg():
    operator, rhs, _ = radial_problem(0.01)
    apply = lambda v: operator.normal(v) + 0.01 * v  # noqa: E731
    plain = conjugate_gradient(apply, rhs, iterations=7)
    identity = conjugate_gradient(apply, rhs, iterations=7, preconditioner=lambda v: v)
    assert torch.allclose(plain, identity, rtol=1e-4, atol=1e-6)


def test_preconditioner_refuses_nonpositive_mu():
    operator = NonCartesianMRI(birdcage_maps(2, (8, 8)), golden_angle_radial(4, 16))
    with pytest.raises(ValueError, match="mu must be > 0"):
        operator.preconditioner(0.0)
