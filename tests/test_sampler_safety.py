"""Safe defaults for user models: the Jacobian gain estimate, and a clear stop at the first NaN/Inf.

Measured (this file's problems):

* ``jacobian_gain`` matches ``LinearOperator.norm()`` and the dense Jacobian's largest singular
  value to float32 rounding (relative 2e-7 at most); the tolerance is 1e-4.
* The transmission model ``y = exp(-10 A x)`` of issue 19 (16-view CT, 25 cm field, bundled CT
  prior, DPS 20 steps, ``x_init = 0``; 64^2 here, 128^2 in the issue): before, all NaN. The
  first Tweedie estimate (model-space values in [-11, 7]) makes ``-10 A x`` reach 210, so
  ``exp`` overflows at step 1 whatever the step size: now a one-line error naming ``clamp``.
  With ``clamp=(-1, 1)`` the image is finite: relative data residual 0.695 (the zero image
  0.96; the old gain of 1 overshoots to 1.48), PSNR 10.1 dB. That PSNR is no better than a
  blank image: at this scale the thickest rays keep ``exp(-39)`` of the beam, and 20 DPS steps
  fit little; the estimated gain is 123 (the truth's Jacobian: 69).
* The same model in a small Gaussian world where DPS works (exact denoiser, 16^2, 32 views,
  ``10 A x <= 3``, attenuation in 1/mm, 16 draws, ``x_init = 0``, 20 steps, ``zeta = 10``; the
  default 0.3 is too small a step for 20 steps: 0.96): batch-mean error 0.26 relative to the
  prior mean's (1 = data ignored). With the old gain of 1 (steps ~10^3 too large) it diverged:
  before, 19 % of the pixels NaN (at ``zeta = 0.3`` finite but error 143), now an error at
  step 16. Re-expressed in 1/cm, the result is the same image to 2.5e-7 relative.
"""

import math

import pytest
import torch
from test_samplers import problem

from operators import MatrixOperator, ParallelBeamCT
from priors import GaussianPrior, Normalization, load_prior
from recon import psnr, reconstruct
from recon.data.phantoms import make_phantom
from recon.errors import ReconError
from recon.samplers import DDS, DPS, REDDiff
from recon.samplers.safety import NonFiniteError, check_finite, jacobian_gain

pytestmark = pytest.mark.usefixtures("one_thread")


def known_matrix(m: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """``U diag(s) V^H`` with singular values 3, 1.5, ... (a clear gap: power iteration converges)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=dtype))[0]
    v = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype))[0]
    s = torch.linspace(1.5, 0.1, min(m, n), dtype=torch.float64)
    s[0] = 3.0
    return (u[:, : len(s)] * s.to(dtype)) @ v[:, : len(s)].mH


def dense_gain(f, x: torch.Tensor) -> float:
    """Largest singular value of the real Jacobian of ``f`` at ``x`` (complex as pairs of reals)."""
    if not x.is_complex():
        jac = torch.autograd.functional.jacobian(f, x)
        return float(torch.linalg.svdvals(jac.reshape(f(x).numel(), x.numel()))[0])

    def real_f(xr):
        out = f(torch.view_as_complex(xr))
        return torch.view_as_real(out) if out.is_complex() else out

    xr = torch.view_as_real(x).contiguous()
    jac = torch.autograd.functional.jacobian(real_f, xr)
    return float(torch.linalg.svdvals(jac.reshape(real_f(xr).numel(), xr.numel()))[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["real", "complex"])
def test_jacobian_gain_of_a_linear_operator_is_its_norm(dtype):
    A = MatrixOperator(known_matrix(8, 12, dtype), in_shape=(1, 12))
    x = torch.randn(1, 1, 12, dtype=dtype, generator=torch.Generator().manual_seed(1))
    gain = jacobian_gain(A, x)
    assert gain == pytest.approx(3.0, rel=1e-4)
    assert gain == pytest.approx(A.norm(generator=torch.Generator().manual_seed(0), dtype=dtype), rel=1e-4)
    ct = ParallelBeamCT(16, torch.arange(8) * math.pi / 8, pixel_size=0.5)
    assert jacobian_gain(ct, torch.rand(1, 1, 16, 16)) == pytest.approx(ct.norm(), rel=1e-4)


@pytest.mark.parametrize("model", ["exp", "exp_complex", "abs2_complex"])
def test_jacobian_gain_of_a_nonlinear_model_is_the_dense_jacobians_top_singular_value(model):
    """``exp(-c M x)`` (real; complex, holomorphic) and ``|M x|^2`` (complex in, real out, not
    holomorphic): the gain depends on ``x`` and is not ``c ||M||``."""
    g = torch.Generator().manual_seed(2)
    dtype = torch.float32 if model == "exp" else torch.complex64
    M = MatrixOperator(torch.randn(10, 12, generator=g, dtype=dtype) / 4, in_shape=(1, 12))
    x = torch.randn(1, 1, 12, generator=g, dtype=dtype)
    c = 3.0
    f = (lambda v: M(v).abs() ** 2) if model == "abs2_complex" else (lambda v: torch.exp(-c * M(v)))
    gain = jacobian_gain(f, x)
    assert gain == pytest.approx(dense_gain(f, x), rel=1e-4)
    if model != "abs2_complex":
        assert abs(gain / (c * M.norm(dtype=dtype)) - 1) > 0.1


def test_jacobian_gain_is_deterministic_leaves_the_global_rng_alone_and_takes_the_batch_max():
    M = MatrixOperator(torch.randn(10, 12, generator=torch.Generator().manual_seed(3)) / 4, in_shape=(1, 12))
    f = lambda v: torch.exp(-3.0 * M(v))  # noqa: E731
    x = torch.randn(2, 1, 12, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first = jacobian_gain(f, x)
    assert torch.equal(torch.get_rng_state(), state)
    assert jacobian_gain(f, x) == first
    assert first == pytest.approx(max(jacobian_gain(f, x[:1]), jacobian_gain(f, x[1:])), rel=1e-4)


class _OnceDifferentiableSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_jacobian_gain_of_a_model_whose_backward_is_not_differentiable_asks_for_the_gain():
    x = torch.tensor([[1.0, 3.0]])
    assert jacobian_gain(lambda v: v**2, x) == pytest.approx(6.0, rel=1e-6)
    with pytest.raises(TypeError, match="operator_norm"):
        jacobian_gain(_OnceDifferentiableSquare.apply, x)


def test_dps_refuses_a_model_with_no_gain_at_the_start():
    prior, physics, y, _ = problem()
    flat = lambda v: physics((v - 1.0) ** 2)  # noqa: E731  (zero Jacobian at x = 1)
    with pytest.raises(ValueError, match="Jacobian at the starting image has norm 0.0"):
        DPS(prior, steps=5)(y, flat, x_init=torch.ones(1, *physics.in_shape))


def test_check_finite_names_the_sampler_step_and_setting_on_one_line():
    check_finite(torch.ones(3), "DPS", 1, 20, "unused")
    for bad in (torch.tensor([1.0, math.nan]), torch.tensor([1.0, math.inf]), torch.tensor([1 + 1j, complex(0, math.nan)])):
        with pytest.raises(NonFiniteError) as err:
            check_finite(bad, "DPS", 12, 20, "lower zeta (now 0.3)\nor pass operator_norm")
        assert str(err.value) == ("DPS: non-finite values (NaN or Inf) at step 12 of 20; "
                                  "lower zeta (now 0.3) or pass operator_norm")
    assert issubclass(NonFiniteError, ReconError)


def transmission_ct(size: int = 64):
    """The issue's model: 16-view CT over a 25 cm field, ``y = exp(-10 A x)``, a head phantom in 1/cm."""
    A = ParallelBeamCT(size, torch.arange(16) * math.pi / 16, pixel_size=25 / size)
    truth = torch.from_numpy(make_phantom("head", "test", 0, size))[None, None].float()
    f = lambda v: torch.exp(-10 * A(v))  # noqa: E731
    return f, truth, f(truth)


def test_transmission_example_stops_clearly_or_is_finite_with_clamp():
    f, truth, y = transmission_ct()
    prior = load_prior("ct-phantom-128")
    run = lambda **kw: reconstruct(y, f, prior, "dps", steps=20, x_init=torch.zeros_like(truth),  # noqa: E731
                                   generator=torch.Generator().manual_seed(0), **kw)
    with pytest.raises(NonFiniteError) as err:  # exp overflows on the first Tweedie estimate
        run()
    message = str(err.value)
    assert "\n" not in message and "step 1 of 20" in message and "set clamp" in message
    x = run(clamp=(-1.0, 1.0))
    residual = lambda v: float((y - f(v)).norm() / y.norm())  # noqa: E731
    assert torch.isfinite(x).all()
    assert residual(x) < 0.8 < residual(torch.zeros_like(truth))  # measured 0.695; zero image 0.96; gain 1: 1.48
    assert psnr(x, truth) > 9.0  # measured 10.1 dB (a blank image: 10.3)


def gaussian_transmission(unit: float):
    """Attenuation ``x`` with a smooth Gaussian prior (exact denoiser) in physical units ``unit``
    (1: 1/mm; 0.1: 1/cm, values 10x larger), 16^2, 32-view CT, ``y = exp(-10 A x)``, ``10 A x <= 3``."""
    n = 16
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2).double()
    cov = 0.25 * torch.exp(-((ij[:, None] - ij[None]) ** 2).sum(-1) / 18.0) + 0.01 * torch.eye(n * n, dtype=torch.float64)
    scale = 0.001 / unit
    prior = GaussianPrior(torch.zeros(n * n), cov, shape=(1, n, n), normalization=Normalization(2.5 * scale, scale))
    truth = prior.image(prior.mixture.sample(1, torch.Generator().manual_seed(0)))
    angles = torch.arange(32) * math.pi / 32
    pixel = 3.0 / (10 * float(ParallelBeamCT(n, angles)(truth).max()))
    A = ParallelBeamCT(n, angles, pixel_size=pixel)
    f = lambda v: torch.exp(-10 * A(v))  # noqa: E731
    return prior, f, truth, f(truth)


def test_transmission_gain_estimate_makes_zeta_unit_free_and_fits_the_data():
    prior, f, truth, y = gaussian_transmission(1.0)
    ys, start = y.expand(16, -1, -1, -1), torch.zeros_like(truth)
    run = lambda prior, f, ys, start, **kw: reconstruct(ys, f, prior, "dps", steps=20, zeta=10.0, x_init=start,  # noqa: E731
                                                        generator=torch.Generator().manual_seed(1), **kw)
    error = lambda x: float((x.mean(0) - truth[0]).norm() / (prior.decode(0 * truth) - truth).norm())  # noqa: E731
    x = run(prior, f, ys, start)
    assert torch.isfinite(x).all() and error(x) < 0.35  # measured 0.26 (1: the data ignored)
    with pytest.raises(NonFiniteError, match="step 16 of 20"):  # the old default: the gain taken as 1
        run(prior, f, ys, start, operator_norm=1.0)
    prior_cm, f_cm, truth_cm, y_cm = gaussian_transmission(0.1)
    torch.testing.assert_close(truth_cm, 10 * truth)
    x_cm = run(prior_cm, f_cm, y_cm.expand(16, -1, -1, -1), start)
    torch.testing.assert_close(x_cm, 10 * x, rtol=1e-4, atol=1e-4 * float(x_cm.abs().max()))


@pytest.mark.parametrize("make, setting", [
    (lambda p: DPS(p, steps=10, zeta=1e30, operator_norm=1e-10), "zeta (now 1e+30)"),
    (lambda p: REDDiff(p, steps=10, lam=1e39), "lam (now 1e+39)"),
    (lambda p: REDDiff(p, steps=10, sigma=1e-30), "sigma (now 1e-30)"),
    (lambda p: DDS(p, steps=10, gamma=1e45), "gamma (now 1e+45)"),
], ids=["DPS_zeta", "REDDiff_lam", "REDDiff_sigma", "DDS_gamma"])
def test_absurd_settings_stop_with_one_line_naming_the_step_and_setting(make, setting):
    """Each overflows float32 at its first step. (DPS ``zeta = 1e6`` with ``operator_norm =
    1e-6`` or RED-Diff ``lr = 1e6`` stay finite, 4.6e11 and 1.5e6 at most: not caught.)"""
    prior, physics, y, _ = problem()
    with pytest.raises(NonFiniteError) as err:
        make(prior)(y, physics, generator=torch.Generator().manual_seed(0))
    message = str(err.value)
    assert "\n" not in message and "step 1 of 10" in message and setting in message


def test_a_measurement_holding_nan_is_named_before_any_step():
    prior, physics, y, _ = problem()
    y = y.clone()
    y[0, 3] = math.nan
    for sampler in (DPS(prior, steps=5), REDDiff(prior, steps=5), DDS(prior, steps=5)):
        with pytest.raises(NonFiniteError, match="measurement y holds NaN or Inf"):
            sampler(y, physics, generator=torch.Generator().manual_seed(0))
