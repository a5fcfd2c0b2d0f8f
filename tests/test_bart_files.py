"""BART files in and out of a run: a run's ``bart/`` folder (recon.io.bart_run), read back by
``bart pics`` (when installed) and by ``data=bart`` (recon.data.bart_source), which reproduces
the run's scores."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from operators import MultiCoilMRI, NonCartesianMRI, golden_angle_radial, ifft2c
from recon.app import main
from recon.baselines.mri import CGSense
from recon.data.bart_source import NO_REFERENCE, bart_scan, sampling_mask
from recon.errors import InputError
from recon.io.bart_run import write_bart_run
from recon.io.cfl import (
    from_bart_coils,
    from_bart_image,
    kspace_from_bart_noncart,
    read_cfl,
    to_bart_coils,
    trajectory_from_bart,
    trajectory_to_bart,
    write_cfl,
)

pytestmark = pytest.mark.usefixtures("one_thread")
needs_bart = pytest.mark.skipif(shutil.which("bart") is None, reason="the bart command is not installed")

N, SPOKES = 32, 24
RADIAL = ["task=mri_radial", "device=cpu", "samplers=[]", "baselines=[gridding,cg_sense]"]
CARTESIAN = ["task=mri_multicoil", "device=cpu", "samplers=[]", "baselines=[zero_filled,cg_sense]"]


@pytest.fixture(scope="module")
def radial_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("radial") / "run"
    assert main(["run", *RADIAL, f"data.size={N}", f"operator.trajectory.spokes={SPOKES}", f"hydra.run.dir={run_dir}"]) == 0
    return run_dir


@pytest.fixture(scope="module")
def cartesian_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cartesian") / "run"
    assert main(["run", *CARTESIAN, f"data.size={N}", f"hydra.run.dir={run_dir}"]) == 0
    return run_dir


def psnrs(run_dir):
    return {name: m["psnr"] for name, m in json.loads((run_dir / "metrics.json").read_text())["methods"].items()}


def test_radial_run_writes_its_arrays_in_bart_layouts(radial_run):
    bart = radial_run / "bart"
    assert sorted(p.name for p in bart.iterdir()) == sorted(
        f"{n}.{s}" for n in ("kspace", "maps", "traj", "truth", "recon_gridding", "recon_cg_sense") for s in ("cfl", "hdr"))
    y = np.load(radial_run / "measurement.npy")
    assert y.shape == (1, 8, SPOKES, 2 * N)
    kspace = read_cfl(bart / "kspace")
    assert kspace.shape == (1, 2 * N, SPOKES, 8)
    assert np.array_equal(kspace_from_bart_noncart(kspace).numpy(), y[0])
    assert read_cfl(bart / "maps").shape == (N, N, 1, 8)
    traj = read_cfl(bart / "traj")
    assert traj.shape == (3, 2 * N, SPOKES) and np.abs(traj.real).max() <= N / 2
    assert np.array_equal(traj, trajectory_to_bart(golden_angle_radial(SPOKES, 2 * N), (N, N)))
    assert np.array_equal(from_bart_image(read_cfl(bart / "truth")).numpy(), np.load(radial_run / "ground_truth.npy")[0, 0])
    for name in ("gridding", "cg_sense"):
        image = from_bart_image(read_cfl(bart / f"recon_{name}")).numpy()
        assert np.array_equal(image, np.load(radial_run / f"recon_{name}.npy")[0, 0])


def test_cartesian_run_writes_kspace_and_its_pattern(cartesian_run):
    bart = cartesian_run / "bart"
    assert {p.stem for p in bart.iterdir()} == {"kspace", "maps", "pattern", "truth", "recon_zero_filled", "recon_cg_sense"}
    y = np.load(cartesian_run / "measurement.npy")
    assert np.array_equal(from_bart_coils(read_cfl(bart / "kspace")).numpy(), y[0])
    pattern = read_cfl(bart / "pattern", squeeze=False)
    assert pattern.shape == (N, N) + (1,) * 14 and set(np.unique(pattern)) == {0, 1}
    sampled = np.abs(y[0]).sum(axis=(0, 1)) > 0  # 4x equispaced columns
    assert np.array_equal(pattern.reshape(N, N), np.broadcast_to(sampled, (N, N)).astype(np.complex64))
    assert N / sampled.sum() == pytest.approx(4, rel=0.2)


def test_non_mri_operators_write_no_bart_folder(tmp_path):
    assert write_bart_run(tmp_path / "bart", torch.nn.Identity(), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {}) is None
    assert not (tmp_path / "bart").exists()


def _pics(bart, out, *options):
    done = subprocess.run(["bart", "pics", *map(str, options), bart / "kspace", bart / "maps", out],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return from_bart_image(read_cfl(out))


def _relative(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@needs_bart
def test_bart_pics_solves_the_radial_run_in_recons_scale(radial_run, tmp_path):
    """``bart pics -S -l2 -r 0.01`` on the run's files solves ``(A^H A + 0.01 I) x = A^H y`` with the
    same A as recon: BART's pics normalises its NUFFT by 1/sqrt(H W) (the ``bart nufft`` command
    does not, tests/test_cfl.py), which is recon's normalisation, so no factor is needed; measured
    0.54 % from recon's own solution (the two NUFFTs' accuracy), 3.1 % from the truth (noise)."""
    bart = radial_run / "bart"
    x = _pics(bart, tmp_path / "x", "-S", "-l2", "-r", 0.01, "-i", 100, "-t", bart / "traj")
    maps = from_bart_coils(read_cfl(bart / "maps"))
    op = NonCartesianMRI(maps, trajectory_from_bart(read_cfl(bart / "traj"), (N, N)))  # no density: plain normal equations
    y = kspace_from_bart_noncart(read_cfl(bart / "kspace"))[None]
    assert _relative(x, CGSense(100, 0.01)(y, op)[0, 0]) < 0.01
    truth = from_bart_image(read_cfl(bart / "truth"))
    assert _relative(x, truth) < 0.04
    assert complex(torch.vdot(x.flatten(), truth.flatten()) / torch.vdot(x.flatten(), x.flatten())) == pytest.approx(1, abs=0.01)


@needs_bart
def test_bart_pics_solves_the_cartesian_run_exactly(cartesian_run, tmp_path):
    """Cartesian pics is recon's model exactly (a unitary centred FFT): measured 2.5e-5 from recon's
    Tikhonov solution; the pattern file changes nothing (pics infers it from the zeros)."""
    bart = cartesian_run / "bart"
    x = _pics(bart, tmp_path / "x", "-S", "-l2", "-r", 0.01, "-i", 100)
    with_pattern = _pics(bart, tmp_path / "xp", "-S", "-l2", "-r", 0.01, "-i", 100, "-p", bart / "pattern")
    assert torch.allclose(with_pattern, x)
    kspace = from_bart_coils(read_cfl(bart / "kspace"))
    op = MultiCoilMRI(from_bart_coils(read_cfl(bart / "maps")), sampling_mask(kspace))
    assert _relative(x, CGSense(100, 0.01)(kspace[None], op)[0, 0]) < 1e-4


def test_radial_bart_folder_reproduces_the_runs_scores(radial_run, tmp_path):
    bart = radial_run / "bart"
    again = tmp_path / "again"
    assert main(["run", *RADIAL, "data=bart", f"data.kspace={bart / 'kspace'}", f"data.maps={bart / 'maps'}",
                 f"data.trajectory={bart / 'traj'}", f"data.reference={bart / 'truth'}", "operator.trajectory.spokes=5",
                 "noise.sigma=0.5", f"hydra.run.dir={again}"]) == 0  # the files' trajectory and noise win
    before, after = psnrs(radial_run), psnrs(again)
    assert list(after) == ["gridding", "cg_sense"]
    for name in before:
        assert after[name] == pytest.approx(before[name], abs=0.01)
    assert np.array_equal(np.load(again / "measurement.npy"), np.load(radial_run / "measurement.npy"))


def test_cartesian_bart_folder_reproduces_the_runs_scores(cartesian_run, tmp_path):
    bart = cartesian_run / "bart"
    again = tmp_path / "again"
    assert main(["run", *CARTESIAN, "data=bart", f"data.kspace={bart / 'kspace'}", f"data.maps={bart / 'maps'}",
                 f"data.reference={bart / 'truth'}", "mask.acceleration=8", f"hydra.run.dir={again}"]) == 0
    before, after = psnrs(cartesian_run), psnrs(again)  # the k-space's own mask replaced mask.acceleration=8
    for name in before:
        assert after[name] == pytest.approx(before[name], abs=0.01)


def test_without_maps_they_come_from_the_scans_centre(radial_run, cartesian_run, tmp_path, capsys):
    """A scan with k-space and trajectory only: ESPIRiT on its own gridded centre gives maps with
    which CG-SENSE does at least as well as with the true maps."""
    bart = radial_run / "bart"
    files = [f"data.kspace={bart / 'kspace'}", f"data.trajectory={bart / 'traj'}"]
    again = tmp_path / "again"
    assert main(["run", *RADIAL, "data=bart", *files, f"data.reference={bart / 'truth'}", "operator.calib_width=16",
                 f"hydra.run.dir={again}"]) == 0
    before, after = psnrs(radial_run), psnrs(again)
    # measured 40.1 against 37.9 dB: ESPIRiT's maps are cropped to the object, so CG-SENSE leaves no
    # noise in the background that the true (everywhere non-zero) maps let in
    assert after["cg_sense"] > before["cg_sense"] + 1, (before, after)
    # without a reference or maps the image size must be given
    assert main(["run", *RADIAL, "data=bart", *files, f"hydra.run.dir={tmp_path / 'x'}"]) == 2
    assert "data.shape=[H,W]" in capsys.readouterr().err
    # a Cartesian scan whose fully sampled centre is too small for ESPIRiT says so in one line
    cartesian = cartesian_run / "bart"
    assert main(["run", *CARTESIAN, "data=bart", f"data.kspace={cartesian / 'kspace'}",
                 f"hydra.run.dir={tmp_path / 'y'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small for ESPIRiT" in err[0]


def test_without_a_reference_the_stand_in_is_labelled(radial_run, cartesian_run):
    bart = cartesian_run / "bart"
    scan = bart_scan(str(bart / "kspace"), str(bart / "maps"))
    assert NO_REFERENCE in scan.name and NO_REFERENCE in scan.units
    coils = ifft2c(torch.from_numpy(np.load(cartesian_run / "measurement.npy")[0]))
    assert torch.allclose(scan.image[0, 0], coils.abs().square().sum(0).sqrt(), atol=1e-6)
    bart = radial_run / "bart"
    scan = bart_scan(str(bart / "kspace"), str(bart / "maps"), str(bart / "traj"))
    truth = np.abs(np.load(radial_run / "ground_truth.npy")[0, 0])
    assert NO_REFERENCE in scan.units and _relative(scan.image[0, 0], torch.from_numpy(truth)) < 0.25  # measured 0.18


def test_sampling_mask_is_columns_or_points():
    kspace = torch.zeros(2, 4, 6, dtype=torch.complex64)
    kspace[0, :, [1, 4]] = 1
    assert torch.equal(sampling_mask(kspace), torch.tensor([0, 1, 0, 0, 1, 0.0]))
    kspace[1, 2, 2] = 1j
    mask = sampling_mask(kspace)
    assert mask.shape == (4, 6) and mask.sum() == 9 and mask[2, 2] == 1


@pytest.fixture
def files(tmp_path):
    """A tiny consistent scan: 3 coils, 8 x 6 images, Cartesian and radial (5 spokes of 12)."""
    rng = np.random.default_rng(0)
    coils = (rng.standard_normal((3, 8, 6)) + 1j * rng.standard_normal((3, 8, 6))).astype(np.complex64)
    write_cfl(tmp_path / "maps", to_bart_coils(coils))
    write_cfl(tmp_path / "kspace", to_bart_coils(coils))
    write_cfl(tmp_path / "maps4", to_bart_coils(np.concatenate([coils, coils[:1]])))
    write_cfl(tmp_path / "maps_wide", to_bart_coils(coils[:, :, :5]))
    write_cfl(tmp_path / "two_sets", np.stack([to_bart_coils(coils)] * 2, axis=4))
    write_cfl(tmp_path / "nc", np.ones((1, 12, 5, 3), np.complex64))
    write_cfl(tmp_path / "traj", trajectory_to_bart(golden_angle_radial(5, 12), (8, 6)))
    write_cfl(tmp_path / "traj_short", trajectory_to_bart(golden_angle_radial(5, 10), (8, 6)))
    write_cfl(tmp_path / "ref", np.ones((8, 6), np.complex64))
    write_cfl(tmp_path / "ref_small", np.ones((6, 6), np.complex64))
    return tmp_path


@pytest.mark.parametrize("args, culprit, needle", [
    (("missing", "maps"), "missing.hdr", "not found"),
    (("kspace", "missing"), "missing.hdr", "not found"),
    (("nc", "maps", "missing"), "missing.hdr", "not found"),
    (("kspace", "maps", None, "missing"), "missing.hdr", "not found"),
    (("kspace", "maps4"), "kspace", "3 coils but the maps .* have 4"),
    (("nc", "maps4", "traj"), "nc", "3 coils but the maps .* have 4"),
    (("kspace", "maps_wide"), "kspace", r"\(8, 6\) \(H, W\) but the maps .* are \(8, 5\)"),
    (("kspace", "two_sets"), "two_sets", "must have size 1"),
    (("nc", "maps", "traj_short"), "traj_short", "10 samples x 5 spokes but the k-space .* has 12 samples x 5 spokes"),
    (("kspace", "maps", None, "ref_small"), "ref_small", r"is \(6, 6\) but the scan's images are \(8, 6\)"),
])
def test_bad_files_raise_one_input_error_naming_the_file(files, args, culprit, needle):
    paths = [None if a is None else str(files / a) for a in args]
    with pytest.raises(InputError, match=needle) as err:
        bart_scan(*paths)
    assert err.value.path.startswith(str(files / culprit))


def test_consistent_files_give_a_scan(files):
    scan = bart_scan(str(files / "nc"), str(files / "maps"), str(files / "traj"), str(files / "ref"))
    assert scan.kspace.shape == (1, 3, 5, 12) and scan.trajectory.shape == (5, 12, 2) and scan.mask is None
    assert scan.image.shape == (1, 1, 8, 6) and not scan.image.is_complex()  # a real reference stays real
    scan = bart_scan(str(files / "kspace"), str(files / "maps"))
    assert scan.kspace.shape == (1, 3, 8, 6) and torch.equal(scan.mask, torch.ones(6))


@pytest.mark.parametrize("task, trajectory, needle", [
    ("mri_radial", False, "Cartesian k-space .* use task=mri_multicoil"),
    ("mri_multicoil", True, "non-Cartesian k-space .* use task=mri_radial or task=mri_spiral"),
])
def test_a_task_of_the_other_kind_is_one_line(radial_run, cartesian_run, task, trajectory, needle, tmp_path, capsys):
    bart = (radial_run if trajectory else cartesian_run) / "bart"
    extra = [f"data.trajectory={bart / 'traj'}"] if trajectory else []
    code = main(["run", f"task={task}", "device=cpu", "samplers=[]", "baselines=[cg_sense]", "data=bart",
                 f"data.kspace={bart / 'kspace'}", f"data.maps={bart / 'maps'}", *extra, f"hydra.run.dir={tmp_path / 'x'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert re.search(needle, err[0]), err
