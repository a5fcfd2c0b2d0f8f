"""3D: slice-stack operators, z-TV ADMM, the volume samplers, phantom volumes, NIfTI volumes, the 3D task."""

import json
import math

import numpy as np
import pytest
import torch

from operators import LinearOperator, MatrixOperator
from operators.volume import SliceStack, parallel_beam_ct3d, z_difference, z_difference_adjoint
from priors import GaussianPrior
from recon.app import main
from recon.data.volumes import head_volume
from recon.io.images import load_volume, save_nifti
from recon.samplers import DDS, DDS3D, SliceCoupled
from recon.samplers.volume import PerSlice, ZTVConsistency, eps_by_chunks

G = torch.Generator().manual_seed(0)


def test_slice_stack_adjoint_and_per_slice_action():
    A = parallel_beam_ct3d(32, 5, 6, pixel_size=0.5)
    x = torch.rand(2, 1, 5, 32, 32, generator=G, dtype=torch.float64)
    y = torch.rand(2, *A.out_shape, generator=G, dtype=torch.float64)
    assert float((A(x) * y).sum()) == pytest.approx(float((x * A.adjoint(y)).sum()), rel=1e-6)
    assert torch.allclose(A(x)[:, :, 3], A.slice_operator(x[:, :, 3]), atol=1e-6)


def test_slice_stack_norm_is_that_of_one_slice():
    A = parallel_beam_ct3d(32, 5, 6, pixel_size=0.5)
    on_volume = LinearOperator.norm(A, 100, generator=torch.Generator().manual_seed(1))  # power iteration on the stack
    assert A.norm(generator=torch.Generator().manual_seed(2)) == pytest.approx(on_volume, rel=1e-4)


def test_z_difference_adjoint():
    x = torch.randn(2, 1, 6, 4, 4, generator=G, dtype=torch.float64)
    g = torch.randn(2, 1, 5, 4, 4, generator=G, dtype=torch.float64)
    assert float((z_difference(x) * g).sum()) == pytest.approx(float((x * z_difference_adjoint(g)).sum()))


def test_ztv_admm_removes_slice_to_slice_noise_in_the_null_space():
    """Half of every slice unobserved: lam > 0 makes the unobserved half agree across slices."""
    depth, n = 6, 8
    mask = torch.zeros(1, n * n)
    mask[0, : n * n // 2] = 1
    selector = MatrixOperator(torch.diag(mask[0]), in_shape=(1, n * n), out_shape=(1, n * n))
    flat = SliceStack(selector, depth)
    truth = torch.ones(1, 1, depth, n * n)
    y = flat(truth)
    prior = GaussianPrior(torch.zeros(n * n), torch.eye(n * n, dtype=torch.float64), shape=(1, n * n))
    start = truth + 0.3 * torch.randn(truth.shape, generator=G)
    plain = ZTVConsistency(y, flat, prior, rho=1.0, lam=0.0, cg_iterations=20)(start)
    coupled_solver = ZTVConsistency(y, flat, prior, rho=1.0, lam=0.05, cg_iterations=20, admm_iterations=50)
    coupled = coupled_solver(start)
    free = slice(n * n // 2, None)
    assert torch.allclose(plain[..., : n * n // 2], truth[..., : n * n // 2], atol=1e-4)  # data fitted
    spread = lambda v: float(z_difference(v[..., free]).abs().mean())  # noqa: E731
    assert spread(coupled) < 0.2 * spread(plain)


def test_eps_by_chunks_matches_one_call():
    prior = GaussianPrior(torch.zeros(16), torch.eye(16, dtype=torch.float64) * 0.5, shape=(1, 4, 4))
    z = torch.randn(2, 1, 5, 4, 4, generator=G)
    whole = prior.eps(z.permute(0, 2, 1, 3, 4).reshape(10, 1, 4, 4), 300).reshape(2, 5, 1, 4, 4).permute(0, 2, 1, 3, 4)
    assert torch.allclose(eps_by_chunks(prior, z, 300, chunk=3), whole, atol=1e-6)


@pytest.mark.parametrize("make", [lambda p: SliceCoupled(p, steps=20, chunk=2),
                                  lambda p: SliceCoupled(p, steps=20, chunk=2, data_step_on="noisy"),
                                  lambda p: DDS3D(p, steps=10, chunk=3)],
                         ids=["slice_coupled", "slice_coupled_noisy", "dds_3d"])
def test_volume_samplers_fit_the_data_and_are_seeded(make):
    prior = GaussianPrior(torch.zeros(16), torch.eye(16, dtype=torch.float64) * 0.5, shape=(1, 4, 4))
    matrix = torch.randn(10, 16, generator=G) / 4
    A = SliceStack(MatrixOperator(matrix, in_shape=(1, 4, 4), out_shape=(1, 10)), 4)
    truth = torch.randn(1, 1, 4, 4, 4, generator=G) * 0.7
    y = A(truth)
    sampler = make(prior)
    x = sampler(y, A, generator=torch.Generator().manual_seed(2))
    assert x.shape == truth.shape and torch.isfinite(x).all()
    assert float((A(x) - y).norm() / y.norm()) < 0.3
    assert torch.equal(x, sampler(y, A, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(TypeError, match="LinearOperator"):
        sampler(y, lambda v: v, generator=G)


def one_slice_case(support: bool):
    """A Gaussian prior on 4 x 4 slices, a random operator, 3 noisy measurements of one slice, and the
    operator alone and as a one-slice stack (with a 0/1 ``support`` if asked)."""
    g = torch.Generator().manual_seed(0)
    prior = GaussianPrior(torch.zeros(16), torch.eye(16, dtype=torch.float64) * 0.5, shape=(1, 4, 4))
    flat = MatrixOperator(torch.randn(10, 16, generator=g) / 4, in_shape=(1, 4, 4), out_shape=(1, 10))
    stack = SliceStack(flat, 1)
    y = flat(torch.randn(3, 1, 4, 4, generator=g) * 0.7) + 0.05 * torch.randn(3, 1, 10, generator=g)
    if support:
        mask = (torch.rand(1, 1, 4, 4, generator=g) > 0.3).float()
        flat.support, stack.support = mask, mask[:, :, None]
    return prior, flat, stack, y


@pytest.mark.parametrize("settings", [{}, {"gamma": 3.0}, {"late_sigma": 0.5, "late_gamma": 1.0},
                                      {"clamp": (-1.0, 1.0), "eta": 0.5}, {"support": True}, {"x_init": 300.0}],
                         ids=["noiseless", "noisy", "late_steps", "clamp_eta", "support", "x_init"])
def test_dds_3d_on_one_slice_is_2d_dds(settings):
    """DDS3D runs DDS's step with every DDS setting: on one slice (no z-coupling) it is 2D DDS.
    Measured: at most 2.4e-6 apart (CG on the same system, scaled by 1 / ||A||^2), while each setting
    moves the result by 0.017 (x_init, diffused to abar = 4e-5) to 1.1 (support)."""
    settings = dict(settings)
    prior, flat, stack, y = one_slice_case(settings.pop("support", False))
    scale = settings.pop("x_init", None)
    init = None if scale is None else scale * torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    flat_x = DDS(prior, steps=10, **settings)(y, flat, generator=torch.Generator().manual_seed(1), x_init=init)
    volume = DDS3D(prior, steps=10, chunk=2, **settings)(y[:, :, None], stack, x_init=None if init is None else
                                                         init[:, :, None], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(volume[:, :, 0], flat_x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("make", [lambda p: SliceCoupled(p, steps=10, chunk=2), lambda p: DDS3D(p, steps=5, chunk=2)],
                         ids=["slice_coupled", "dds_3d"])
def test_volume_samplers_keep_to_the_support(make):
    prior, flat, _, y = one_slice_case(support=True)
    stack = SliceStack(flat, 3)
    stack.support = flat.support[:, :, None]
    x = make(prior)(y[:, :, None].expand(3, 1, 3, 10), stack, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x * (1 - stack.support), torch.zeros_like(x))
    assert float(x.abs().amin(dim=(0, 1, 2))[stack.support[0, 0, 0].bool()].min()) > 0


def test_head_volume_is_continuous_and_seeded():
    v = head_volume("test", 0, 64, 6)
    assert v.shape == (6, 64, 64) and v.dtype == np.float32
    assert np.array_equal(v, head_volume("test", 0, 64, 6))
    assert not np.array_equal(v, head_volume("train", 0, 64, 6))
    step = np.abs(np.diff(v, axis=0)).mean()
    assert 0 < step < 0.2 * np.abs(v - v.mean()).mean()  # neighbouring slices are close


def test_nifti_volume_round_trip(tmp_path):
    v = head_volume("test", 1, 32, 4)
    save_nifti(tmp_path / "v.nii.gz", v, spacing=(2.0, 2.0, 5.0))
    back, spacing = load_volume(tmp_path / "v.nii.gz")
    assert np.array_equal(back, v) and spacing == (2.0, 2.0, 5.0)


def test_slice_coupled_rejects_an_unknown_data_step():
    prior = GaussianPrior(torch.zeros(16), torch.eye(16, dtype=torch.float64) * 0.5, shape=(1, 4, 4))
    with pytest.raises(ValueError, match="data_step_on"):
        SliceCoupled(prior, data_step_on="x0")


def test_per_slice_needs_a_slice_stack():
    with pytest.raises(ValueError, match="SliceStack"):
        PerSlice(lambda y, A: y)(torch.zeros(1, 1, 2, 3), MatrixOperator(torch.eye(3), in_shape=(1, 3)))


def test_ct3d_task_end_to_end(tmp_path):
    """The reported metrics are those of the written volumes (PSNR and z-PSNR, the PSNR of the
    slice-to-slice differences, against the ground truth's maximum). Measured at this size (32 x 32 x 3,
    3 or 4 steps, the axial head prior): PSNR 21.2 (FBP), 19.4 (independent 2D), 23.8 (slice-coupled),
    19.3 dB (3D DDS)."""
    run_dir = tmp_path / "run"
    assert main(["run", "task=ct3d_sparse", "data=phantom_volume", f"hydra.run.dir={run_dir}", "data.size=32", "data.depth=3",
                 "samplers.independent_2d.steps=3", "samplers.slice_coupled.steps=4", "samplers.dds_3d.steps=3"]) == 0
    report = json.loads((run_dir / "metrics.json").read_text())
    assert list(report["methods"]) == ["fbp", "independent_2d", "slice_coupled", "dds_3d"]
    assert [m["nfe"] for m in report["methods"].values()] == [0, 3, 4, 3]
    truth, _ = load_volume(run_dir / "ground_truth.nii.gz")
    peak = float(truth.max())
    assert report["data_range"] == pytest.approx(peak)
    db = lambda mse: 10 * math.log10(peak**2 / mse)  # noqa: E731
    for name, metrics in report["methods"].items():
        volume, spacing = load_volume(run_dir / f"recon_{name}.nii.gz")
        assert volume.shape == (3, 32, 32) and spacing[2] == pytest.approx(5.0)
        error = volume.astype(np.float64) - truth
        assert metrics["psnr"] == pytest.approx(db(np.mean(error**2)), abs=1e-3)
        assert metrics["z_psnr"] == pytest.approx(db(np.mean(np.diff(error, axis=0) ** 2)), abs=1e-3)
        assert metrics["psnr"] > 18.0
    assert (run_dir / "panel.png").stat().st_size > 0 and (run_dir / "ground_truth.nii.gz").is_file()


def _ct3d_seeds_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ct3d_seeds.py"
    spec = importlib.util.spec_from_file_location("ct3d_seeds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_diagnostics_split_variance_from_bias():
    seeds = _ct3d_seeds_module()
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(1, 1, 6, 24, 24, generator=g, dtype=torch.float64)
    bias = 0.1 * torch.randn(1, 1, 1, 24, 24, generator=g, dtype=torch.float64)  # shared by every slice
    draws = [truth + bias + 0.1 * torch.randn(truth.shape, generator=g, dtype=torch.float64) for _ in range(200)]
    # variance 0.01 per voxel, squared bias 0.01: half the per-draw MSE is sampling variance
    assert seeds.variance_share(draws, truth) == pytest.approx(0.5, abs=0.03)
    assert seeds.neighbour_correlation(bias.expand_as(truth)) == pytest.approx(1.0)
    assert abs(seeds.neighbour_correlation(draws[0] - truth - bias)) < 0.1  # independent noise per slice


def test_ct3d_seeds_script_runs_small():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ct3d_seeds.py"
    done = subprocess.run([sys.executable, str(script), "--task", "ct3d_sparse", "--volumes", "0", "--seeds", "2",
                           "--overrides", "data.size=32 data.depth=3 samplers.independent_2d.steps=2 "
                           "samplers.dds_3d.steps=2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| 0 |")]
    assert [r[1] for r in rows] == ["independent_2d", "dds_3d"]
    assert all(0 <= float(r[5]) <= 1 for r in rows)  # the variance share is a fraction


def test_a_per_slice_method_on_cone_beam_is_one_line(tmp_path, capsys):
    """Cone beam runs on the CPU now; the per-slice FBP baseline cannot use it and says so in one line."""
    assert main(["run", "task=ct3d_sparse", "operator=cone_beam", "samplers=[]", "data.size=16", "data.depth=4",
                 f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    assert "fbp: a per-slice method needs an operator that acts slice by slice" in capsys.readouterr().err
