"""The LinearOperator algebra, conjugate gradient and noise models."""

import math

import pytest
import torch

from operators import (
    GaussianNoise,
    Identity,
    MatrixOperator,
    TransmissionNoise,
    conjugate_gradient,
    inner,
)


def random_op(m, n, complex_=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    dtype = torch.complex128 if complex_ else torch.float64
    return MatrixOperator(torch.randn(m, n, generator=g, dtype=dtype))


def randn(shape, dtype=torch.float64, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("complex_", [False, True])
def test_adjoint_identity_of_derived_operators(complex_):
    dtype = torch.complex128 if complex_ else torch.float64
    a, b, c = random_op(7, 5, complex_, 0), random_op(5, 4, complex_, 1), random_op(5, 4, complex_, 2)
    ops = {
        "A": a,
        "A.H": a.H,
        "A@B": a @ b,
        "B+C": b + c,
        "B-C": b - c,
        "2.5*B": 2.5 * b,
        "-B": -b,
        "(1+2j)*B": (1 + 2j) * b if complex_ else 3 * b,
    }
    for name, op in ops.items():
        x = randn((3, *op.in_shape), dtype, seed=3)
        y = randn((3, *op.out_shape), dtype, seed=4)
        lhs, rhs = inner(op(x), y), inner(x, op.adjoint(y))
        assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10), name


def test_algebra_matches_matrices():
    a, b = random_op(6, 4, seed=0), random_op(4, 3, seed=1)
    x = randn((2, 3))
    ma, mb = a.matrix, b.matrix
    assert torch.allclose((a @ b)(x), x @ (ma @ mb).T)
    assert torch.allclose(a.H.H(randn((2, 4))), a(randn((2, 4))))
    assert torch.allclose(a.normal(randn((2, 4))), randn((2, 4)) @ (ma.T @ ma).T)
    assert torch.allclose((a @ Identity((4,)))(randn((2, 4))), a(randn((2, 4))))
    with pytest.raises(ValueError, match="cannot compose"):
        a @ a
    with pytest.raises(ValueError, match="cannot add"):
        a + b


@pytest.mark.parametrize("complex_", [False, True])
def test_norm_is_the_largest_singular_value(complex_):
    a = random_op(30, 20, complex_)
    expected = torch.linalg.matrix_norm(a.matrix, ord=2).item()
    dtype = torch.complex128 if complex_ else torch.float64
    got = a.norm(iterations=300, generator=torch.Generator().manual_seed(0), dtype=dtype)
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("complex_", [False, True])
def test_cg_solves_batched_hermitian_systems(complex_):
    dtype = torch.complex128 if complex_ else torch.float64
    a = random_op(40, 25, complex_)
    gamma = 0.7
    rhs = randn((3, 25), dtype)

    def apply(v):
        return v + gamma * a.normal(v)

    x = conjugate_gradient(apply, rhs, iterations=100, tol=1e-12)
    m = torch.eye(25, dtype=dtype) + gamma * a.matrix.conj().T @ a.matrix
    expected = torch.linalg.solve(m, rhs.T).T
    assert torch.allclose(x, expected, rtol=1e-8, atol=1e-8)
    # a warm start gives the same solution; each batch element is solved independently
    x_warm = conjugate_gradient(apply, rhs, x0=expected[:, :] + 0.1, iterations=100, tol=1e-12)
    assert torch.allclose(x_warm, expected, atol=1e-8)
    single = conjugate_gradient(apply, rhs[1:2], iterations=100, tol=1e-12)
    assert torch.allclose(single, x[1:2], atol=1e-8)


def test_cg_converges_on_complex_normal_equations():
    """A^H A x = b with complex A: needs conjugated inner products throughout."""
    a = random_op(30, 20, complex_=True)
    rhs = randn((1, 20), torch.complex128)
    x = conjugate_gradient(a.normal, rhs, iterations=60, tol=1e-14)
    assert torch.allclose(a.normal(x), rhs, atol=1e-6)


def test_cg_on_a_rank_one_system_stays_at_the_least_squares_correction():
    """float32 CG on A^T A x = A^T y with A of rank 1: after one step the residual is
    rounding noise; further iterations must not divide by a rounding-noise curvature."""
    g = torch.Generator().manual_seed(0)
    a = MatrixOperator(torch.tensor([[-0.0148, -0.5080]]), in_shape=(1, 2))
    x0 = torch.randn(1000, 1, 2, generator=g)
    aty = a.adjoint(torch.full((1000, 1), 0.3))
    one = conjugate_gradient(a.normal, aty, x0, iterations=1)
    many = conjugate_gradient(a.normal, aty, x0, iterations=20)
    assert torch.allclose(many, one, atol=1e-5)
    assert torch.allclose(a(many), torch.full((1000, 1), 0.3), atol=1e-5)


def test_gaussian_noise_level_and_reproducibility():
    y = torch.zeros(4, 1, 100, 100)
    noise = GaussianNoise(0.05)
    n1 = noise(y, torch.Generator().manual_seed(0))
    n2 = noise(y, torch.Generator().manual_seed(0))
    assert torch.equal(n1, n2)
    assert n1.std().item() == pytest.approx(0.05, rel=0.02)
    yc = torch.zeros(2, 100, 100, dtype=torch.complex64)
    nc = noise(yc, torch.Generator().manual_seed(0))
    assert nc.real.std().item() == pytest.approx(0.05, rel=0.03)
    assert nc.imag.std().item() == pytest.approx(0.05, rel=0.03)
    assert abs(torch.corrcoef(torch.stack([nc.real.flatten(), nc.imag.flatten()]))[0, 1]) < 0.02


def test_transmission_noise_is_poisson_in_counts():
    photons = 1e4
    p = torch.full((1, 1, 200, 200), 2.0)
    y = TransmissionNoise(photons)(p, torch.Generator().manual_seed(0))
    counts = photons * torch.exp(-y.double())
    expected = photons * math.exp(-2.0)
    assert counts.mean().item() == pytest.approx(expected, rel=0.01)
    assert counts.var().item() == pytest.approx(expected, rel=0.05)  # Poisson: var == mean
    assert y.dtype == p.dtype
    # the post-log variance model is 1/(photons * exp(-p))
    assert y.var().item() == pytest.approx(TransmissionNoise(photons).variance(p)[0, 0, 0, 0].item(), rel=0.1)
    with pytest.raises(ValueError):
        TransmissionNoise(0)
