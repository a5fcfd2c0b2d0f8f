"""DiffPIR, PiGDM, DAPS and PnP-DM: data steps against closed forms, Gaussian posteriors, NFE, shapes.

Posterior-mean scores (``test_samplers.score``; 1 for a sampler that ignores the data) measured on
``test_samplers.problem`` (d = 16, m = 8, sigma = 0.1, 400 draws) with the settings below: real
DiffPIR 0.09, PiGDM 0.15, DAPS 0.18, PnP-DM 0.08; complex 0.09, 0.20, 0.09, 0.06; with the data
drowned (sigma = 1e4) all 0.97-1.02. Thresholds: below 0.3, above 0.8.
"""

import math

import pytest
import torch

from operators import MatrixOperator
from recon.samplers import DAPS, SAMPLERS, DiffPIR, PiGDM, PnPDM
from recon.samplers.likelihood import DataTerm
from test_samplers import draws, problem, score, support_problem, unet_problem

GOOD, BAD = 0.3, 0.8
MAKE = {
    "diffpir": lambda p, **kw: DiffPIR(p, **{"zeta": 1.0, **kw}),
    "pigdm": lambda p, **kw: PiGDM(p, **kw),
    "daps": lambda p, **kw: DAPS(p, **{"steps": 30, **kw}),
    "pnp_dm": lambda p, **kw: PnPDM(p, **{"iterations": 40, **kw}),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered_by_name():
    assert {"diffpir": DiffPIR, "pigdm": PiGDM, "daps": DAPS, "pnp_dm": PnPDM}.items() <= SAMPLERS.items()


# --- the data term against dense closed forms ----------------------------------------------------
def dense(complex_data: bool):
    prior, physics, y, _ = problem(complex_data)
    z = prior.encode(torch.ones(1, *physics.in_shape, dtype=physics.matrix.dtype))
    data = DataTerm(y, physics, prior, sigma=0.1, noise=0.0)
    d = z.numel()
    basis = prior.image(torch.eye(d, dtype=torch.float64)) - prior.image(torch.zeros(1, d))
    columns = physics(basis.to(physics.matrix.dtype)).T  # B = A decode, without its offset: (m, d)
    offset = physics(prior.decode(torch.zeros_like(z)))[0]
    return prior, physics, y, z, data, columns.to(torch.complex128 if complex_data else torch.float64), offset


@pytest.mark.parametrize("complex_data", [False, True], ids=["real", "complex"])
def test_prox_and_pseudo_inverse_step_match_the_dense_formulas(complex_data):
    """``prox(c, r)`` is ``argmin ||y - B z - o||^2 / 2 s^2 + ||z - c||^2 / 2 r^2`` over real ``z``;
    PiGDM's step is ``r^2 B^H (r^2 B B^H + s^2 I)^-1 (y - B c - o)`` (real parts for complex data).
    Measured relative errors with 30 CG steps (float32): 9e-7 real, 8e-6 complex."""
    prior, physics, y, z, data, b, offset = dense(complex_data)
    real = lambda v: torch.cat([v.real, v.imag]) if complex_data else v  # noqa: E731
    br, resid = real(b), real((y[0] - offset).to(b.dtype) - b @ z.flatten().to(b.dtype))
    r, s = 0.7, 0.1
    hessian = br.T @ br / s**2 + torch.eye(br.shape[1], dtype=torch.float64) / r**2
    expected = z.flatten().double() + torch.linalg.solve(hessian, br.T @ resid / s**2)
    rel = lambda got, want: float((got.flatten().double() - want).norm() / want.norm())  # noqa: E731
    assert rel(data.prox(z, r, 30), expected) < 3e-5
    step = r**2 * br.T @ torch.linalg.solve(r**2 * br @ br.T + s**2 * torch.eye(br.shape[0], dtype=torch.float64), resid)
    assert rel(data.pseudo_inverse_step(z, r, 30), step) < 3e-5


def test_gaussian_draws_have_the_exact_mean_and_covariance():
    """Perturb-and-MAP draws of ``exp(-f(z) - ||z - c||^2 / 2 r^2)`` (PnP-DM's likelihood step):
    mean and covariance of 20,000 draws against the closed form, to the Monte-Carlo error (the
    mean within 4 standard errors; the covariance within 0.05 relative, Frobenius; measured 0.02)."""
    prior, physics, y, z, data, b, offset = dense(False)
    r, n = 0.5, 20000
    hessian = b.T @ b / 0.01 + torch.eye(b.shape[1], dtype=torch.float64) / r**2
    cov = torch.linalg.inv(hessian)
    mean = cov @ (b.T @ (y[0].double() - offset.double()) / 0.01 + z.flatten().double() / r**2)
    data = DataTerm(y.expand(n, -1), physics, prior, sigma=0.1, noise=0.0)
    got = data.gaussian_draw(z.expand(n, -1, -1), r, 40, torch.Generator().manual_seed(0)).reshape(n, -1).double()
    stderr = cov.diagonal().sqrt() / math.sqrt(n)
    assert ((got.mean(0) - mean).abs() < 4 * stderr).all()
    assert float(torch.linalg.norm(got.T.cov() - cov) / torch.linalg.norm(cov)) < 0.05


# --- samplers on an exact Gaussian posterior -------------------------------------------------------
@pytest.mark.parametrize("complex_data", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("name", list(MAKE))
def test_approaches_the_posterior_mean_and_uses_the_data(name, complex_data):
    prior, physics, y, post = problem(complex_data)
    x = draws(MAKE[name](prior, sigma=0.1), prior, physics, y)
    assert x.is_complex() == complex_data
    assert score(prior, x, post) < GOOD
    assert score(prior, draws(MAKE[name](prior, sigma=1e4), prior, physics, y), post) > BAD


def test_diffpir_with_quad_spacing_approaches_the_posterior_mean():
    """DiffPIR on the reference's "quad" timesteps: measured 0.07 (uniform: 0.09); an unknown
    spacing is refused when the sampler is built."""
    prior, physics, y, post = problem()
    assert score(prior, draws(DiffPIR(prior, zeta=1.0, sigma=0.1, spacing="quad"), prior, physics, y), post) < GOOD
    with pytest.raises(ValueError, match="spacing"):
        DiffPIR(prior, spacing="log")


@pytest.mark.parametrize("task", ["sparse_ct", "limited_angle_ct", "inpainting", "super_resolution"])
def test_diffpir_ct_uses_the_quad_timesteps_chosen_on_training_cases(task):
    """quad won on every task diffpir_ct serves (benchmarks/RESULTS.md, training cases 0-1, uniform ->
    quad: sparse-view 27.87 -> 28.71 dB, limited-angle 23.55 -> 23.89, inpainting 31.47 -> 32.19,
    super-resolution 28.32 -> 28.47); the base diffpir config keeps uniform."""
    from recon.config import load_config

    def spacing(sampler):
        return load_config([f"task={task}", f"samplers=[{sampler}]"]).samplers.diffpir.spacing

    assert (spacing("diffpir_ct"), spacing("diffpir")) == ("quad", "uniform")


def test_limited_angle_ct_defaults_to_diffpir_ct_and_runs_end_to_end(tmp_path):
    """DiffPIR-100 quad led DDS-100 and PiGDM-100 on 4 training heads at the 90 degree wedge
    (benchmarks/RESULTS.md: 24.54 dB / 0.933 against DDS 24.11 / 0.874)."""
    from recon.app import main
    from recon.config import load_config

    samplers = load_config(["task=limited_angle_ct"]).samplers
    assert list(samplers) == ["diffpir"] and (samplers.diffpir.spacing, samplers.diffpir.zeta) == ("quad", 1.0)
    run = tmp_path / "run"
    assert main(["run", "task=limited_angle_ct", f"hydra.run.dir={run}", "data.size=32", "baselines=[fbp]",
                 "samplers.diffpir.steps=4"]) == 0
    assert (run / "metrics.json").is_file()


@pytest.mark.parametrize("name", list(MAKE))
def test_nfe_counts_network_calls_and_callback_every_step(name):
    prior, physics, y, _ = problem()
    sampler = MAKE[name](prior, sigma=0.1, **({"iterations": 6} if name == "pnp_dm" else {"steps": 6}))
    calls, steps = [], []
    hook = prior.network.register_forward_hook(lambda *_: calls.append(1))
    try:
        sampler(y, physics, callback=lambda i, n: steps.append((i, n)), generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert len(calls) == sampler.nfe and steps == [(i, 6) for i in range(6)]


def test_nonlinear_models_where_the_method_allows_them():
    """DAPS differentiates the data term, so a plain callable equals the operator; DiffPIR and
    PnP-DM switch to gradient / Langevin data steps and still use the data; PiGDM refuses."""
    prior, physics, y, post = problem()
    x_init = torch.zeros(1, *physics.in_shape)
    daps = DAPS(prior, steps=5, sigma=0.1, operator_norm=physics.norm())
    run = lambda s, f, seed=1: s(y, f, x_init=x_init, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    torch.testing.assert_close(run(daps, lambda v: physics(v)), run(daps, physics), rtol=0, atol=1e-6)
    for sampler in (DiffPIR(prior, zeta=1.0, sigma=0.1), PnPDM(prior, iterations=40, sigma=0.1)):
        x = sampler(y.expand(400, -1), lambda v: physics(v), x_init=x_init, generator=torch.Generator().manual_seed(1))
        assert score(prior, x, post) < 0.5
    with pytest.raises(TypeError, match="LinearOperator"):
        PiGDM(prior, sigma=0.1)(y, lambda v: physics(v))
    with pytest.raises(ValueError, match="x_init"):
        DiffPIR(prior)(y, lambda v: physics(v))


@pytest.mark.parametrize("complex_data", [False, True], ids=["real", "complex"])
def test_image_shaped_priors_return_physical_images(complex_data):
    """The UNet path (learned-variance channels, complex channels, normalisation): physical
    images of the operator's shape and dtype, finite, and closer to the data than the prior alone."""
    prior, physics, y = unet_problem(complex_data)
    dtype = torch.complex64 if complex_data else torch.float32
    for name, make in MAKE.items():
        sampler = make(prior, noise=0.05, **({"iterations": 3} if name == "pnp_dm" else {"steps": 3}))
        x = sampler(y, physics, generator=torch.Generator().manual_seed(0))
        assert x.shape == (2, 1, 32, 32) and x.dtype == dtype and torch.isfinite(x).all(), name


def test_bad_settings_are_refused():
    prior, physics, y, _ = problem()
    for make in (lambda: DiffPIR(prior, zeta=2.0), lambda: PiGDM(prior, eta=-1.0), lambda: DAPS(prior, lr=3.0),
                 lambda: PnPDM(prior, rho_min=0.0)):
        with pytest.raises(ValueError):
            make()
    with pytest.raises(ValueError, match="noise must be > 0"):
        DiffPIR(prior, noise=0.0)(y, physics)
    assert isinstance(physics, MatrixOperator)


@pytest.mark.parametrize("name", list(MAKE))
def test_non_finite_values_stop_with_one_line(name):
    """A measurement with NaN is refused before step 1; an overflowing model stops at the step it overflows."""
    from recon.samplers import NonFiniteError

    prior, physics, y, _ = problem()
    sampler = MAKE[name](prior, sigma=0.1, **({"iterations": 4} if name == "pnp_dm" else {"steps": 4}))
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="measurement y holds NaN"):
        sampler(bad, physics)
    overflow = MatrixOperator(physics.matrix * 1e30, in_shape=physics.in_shape)
    with pytest.raises(NonFiniteError) as err:
        sampler(y * 1e30, overflow, generator=torch.Generator().manual_seed(0))
    assert "step 1 of 4" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", list(MAKE))
def test_images_are_zero_outside_the_coil_support(name):
    """As DDS (test_samplers.py): where no coil sees the image the split samplers leave 0, not the prior's anatomy."""
    prior, physics, y = support_problem()
    x = MAKE[name](prior)(y, physics, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[..., 0], torch.zeros_like(x[..., 0]))
    assert float(x[..., 1:].abs().mean()) > 0.5
