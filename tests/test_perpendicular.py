"""The perpendicular-prior volume sampler: plane slicing, turns, reduction to 3D DDS, input checks."""

import json
import warnings

import pytest
import torch

from operators import MatrixOperator
from operators.volume import SliceStack
from priors import GaussianPrior
from priors.schedule import VPSchedule
from recon.app import main
from recon.config import load_config
from recon.samplers import DDS3D, Perpendicular
from recon.samplers.perpendicular import eps_in_plane, warn_if_anisotropic

G = torch.Generator().manual_seed(0)


def correlated_prior(rows: int, cols: int) -> GaussianPrior:
    """A Gaussian prior on ``(rows, cols)`` images with a dense covariance: its ``eps`` mixes pixels,
    so a slice taken in the wrong orientation gives a different answer."""
    g = torch.Generator().manual_seed(5)
    root = torch.randn(rows * cols, rows * cols, generator=g, dtype=torch.float64) / rows
    return GaussianPrior(torch.linspace(-0.3, 0.3, rows * cols), root @ root.T + 0.1 * torch.eye(rows * cols),
                         shape=(1, rows, cols))


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_eps_in_plane_is_the_prior_on_each_slice_of_that_plane(plane):
    d, h, w = 4, 5, 6
    shape = {"axial": (h, w), "coronal": (d, w), "sagittal": (d, h)}[plane]
    prior = correlated_prior(*shape)
    z = torch.randn(2, 1, d, h, w, generator=G)
    slices = {"axial": lambda i: z[:, :, i], "coronal": lambda i: z[:, :, :, i], "sagittal": lambda i: z[..., i]}
    count = {"axial": d, "coronal": h, "sagittal": w}[plane]
    expected = torch.stack([prior.eps(slices[plane](i), 300) for i in range(count)], dim={"axial": 2, "coronal": 3,
                                                                                           "sagittal": 4}[plane])
    torch.testing.assert_close(eps_in_plane(prior, z, 300, chunk=3, plane=plane), expected, rtol=0, atol=1e-6)


def cube_case():
    """A per-pixel (diagonal) Gaussian prior on 4 x 4 slices, a 4-slice random operator and a measurement."""
    prior = GaussianPrior(torch.zeros(16), torch.eye(16, dtype=torch.float64) * 0.5, shape=(1, 4, 4))
    A = SliceStack(MatrixOperator(torch.randn(10, 16, generator=G) / 4, in_shape=(1, 4, 4), out_shape=(1, 10)), 4)
    y = A(torch.randn(2, 1, 4, 4, 4, generator=G) * 0.7)
    return prior, A, y


@pytest.mark.parametrize("combine", ["alternate", "average"])
def test_with_a_per_pixel_prior_on_both_planes_it_is_3d_dds(combine):
    """A per-pixel prior denoises any plane alike, so the perpendicular turns change nothing: the sampler
    must then be 3D DDS with plain CG (lam = 0) draw for draw (a plane put back in the wrong orientation
    would move every voxel)."""
    prior, A, y = cube_case()
    x = Perpendicular(prior, prior, steps=6, combine=combine, chunk=3, clamp=(-1, 1))(
        y, A, generator=torch.Generator().manual_seed(1))
    reference = DDS3D(prior, steps=6, lam=0.0, chunk=3, clamp=(-1, 1))(y, A, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x, reference, rtol=0, atol=1e-5)
    assert float((A(x) - y).norm() / y.norm()) < 0.3


def test_turns_alternate_and_end_on_the_axial_prior():
    prior, _, _ = cube_case()
    alternate = Perpendicular(prior, prior, steps=6)
    assert [alternate._turn(i, 6) for i in range(6)] == ["perpendicular", "axial"] * 3
    third = Perpendicular(prior, prior, steps=6, every=3)
    assert [third._turn(i, 6) for i in range(6)] == ["perpendicular", "axial", "axial"] * 2
    assert alternate.nfe == 6 and Perpendicular(prior, prior, steps=6, combine="average").nfe == 12


def test_the_perpendicular_turns_use_the_second_prior():
    """A second prior with another mean pulls the result toward it: the turns are not the axial prior's."""
    prior, A, y = cube_case()
    shifted = GaussianPrior(torch.full((16,), 0.8), torch.eye(16, dtype=torch.float64) * 0.5, shape=(1, 4, 4))
    run = lambda second: Perpendicular(prior, second, steps=6, cg_iterations=0)(  # noqa: E731
        y, A, generator=torch.Generator().manual_seed(1))
    assert float(run(shifted).mean() - run(prior).mean()) > 0.05


def test_bad_settings_and_priors_are_clear_errors():
    prior, A, y = cube_case()
    for kwargs, match in [({"plane": "axial"}, "plane"), ({"combine": "sum"}, "combine"), ({"every": 1}, "every")]:
        with pytest.raises(ValueError, match=match):
            Perpendicular(prior, prior, **kwargs)
    other = GaussianPrior(torch.zeros(16), torch.eye(16, dtype=torch.float64), shape=(1, 4, 4),
                          schedule=VPSchedule.cosine(1000))
    with pytest.raises(ValueError, match="noise schedule"):
        Perpendicular(prior, other)
    with pytest.raises(TypeError, match="DiffusionPrior"):
        Perpendicular(prior, "ct-head-coronal-128")
    prior.card = {"network": {"image_size": 128}}
    with pytest.raises(ValueError, match="at least 32"):
        Perpendicular(prior, prior, steps=2)(y, A)


def test_anisotropic_spacing_is_a_warning_naming_it():
    with pytest.warns(UserWarning, match=r"\(5, 1.95, 1.95\) mm is far from isotropic"):
        assert warn_if_anisotropic((5.0, 1.95, 1.95))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_anisotropic((2.0, 1.95, 1.95))


def test_cli_runs_it_on_a_3d_task_and_warns_on_thick_slices(tmp_path):
    """``samplers=[perpendicular]`` with the bundled axial and coronal head priors on a volume of 5 mm
    slices and 7.8 mm pixels (the ellipse-era phantom volume): it runs from the CLI and warns, naming
    the spacing."""
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"voxel spacing \(z, y, x\) = \(5, 7.81, 7.81\) mm"):
        assert main(["run", "task=ct3d_limited_angle", "data=phantom_volume", "data.size=32", "data.depth=32",
                     "baselines=[]", "samplers=[perpendicular]", "samplers.perpendicular.steps=2",
                     f"hydra.run.dir={run_dir}"]) == 0
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["methods"]["perpendicular"]["nfe"] == 2


def test_a_bad_perpendicular_prior_is_one_line_naming_its_key(tmp_path, capsys):
    args = ["run", "task=ct3d_limited_angle", "data.size=32", "data.depth=32", "baselines=[]",
            "samplers=[perpendicular]", f"hydra.run.dir={tmp_path / 'run'}"]
    assert main([*args, "samplers.perpendicular.perpendicular_prior.name=no-such-prior"]) == 2
    assert "samplers.perpendicular.perpendicular_prior:" in capsys.readouterr().err
    assert main([*args, "samplers.perpendicular.perpendicular_prior.name=null"]) == 2
    assert "samplers.perpendicular.perpendicular_prior: name a bundled prior" in capsys.readouterr().err


@pytest.mark.parametrize("task, tv_z, every", [("ct3d_sparse", 0.0005, 3), ("ct3d_limited_angle", 0.0, 2)])
def test_each_3d_task_sets_the_perpendicular_settings_chosen_for_it(task, tv_z, every):
    """TV along z and fewer coronal turns help at 8 views, not at the wedge (benchmarks/RESULTS.md)."""
    cfg = load_config([f"task={task}", "samplers=[perpendicular]", "data.depth=null"])
    assert (cfg.samplers.perpendicular.lam, cfg.samplers.perpendicular.every) == (tv_z, every)
