"""``python -m recon run task=mri_multicoil``: simulated held-out slice and fastMRI files."""

import importlib.util
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from recon.app import main

pytest.importorskip("sigpy")

TASK = ["task=mri_multicoil", "device=cpu", "baselines.l1_wavelet.iterations=30", "samplers=[]"]
FAST = [*TASK, "data.size=64"]
SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "simulate_fastmri.py"


def simulate_files(folder, **options):
    """Tiny fastMRI-style files from data_scripts/simulate_fastmri.py."""
    spec = importlib.util.spec_from_file_location("simulate_fastmri", SCRIPT)
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    args = {"num-files": 1, "coils": 4, "slices": 2, "size": 48, "slices-from": 60, "slices-to": 80,
            "slice-step": 3, **options}
    assert sim.main(["--out", str(folder), *[f"--{k}={v}" for k, v in args.items()]]) == 0
    return sorted(Path(folder).glob("*.h5"))


@pytest.fixture(scope="module")
def slab_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mri") / "run"
    assert main(["run", *FAST, f"hydra.run.dir={run_dir}"]) == 0
    return run_dir


def test_simulated_slice_writes_complex_results_and_magnitude_nifti(slab_run):
    report = json.loads((slab_run / "metrics.json").read_text())
    assert report["task"] == "mri_multicoil" and report["data"] == "mni152-heldout-z110"
    assert report["units"] == "a.u." and 0.5 < report["data_range"] <= 1
    methods = report["methods"]
    assert list(methods) == ["zero_filled", "cg_sense", "l1_wavelet"]
    assert methods["l1_wavelet"]["psnr"] > methods["zero_filled"]["psnr"] > 15
    truth = np.load(slab_run / "ground_truth.npy")
    assert truth.shape == (1, 1, 64, 64) and np.iscomplexobj(truth)
    y = np.load(slab_run / "measurement.npy")
    assert y.shape == (1, 8, 64, 64)
    sampled = np.abs(y).sum(axis=(0, 1, 2)) > 0  # columns: 4x equispaced, noise only where sampled
    assert 64 / sampled.sum() == pytest.approx(4, rel=0.15)
    for name in methods:
        recon = np.load(slab_run / f"recon_{name}.npy")
        assert recon.shape == (1, 1, 64, 64) and np.iscomplexobj(recon)
        nifti = np.asarray(nib.load(slab_run / f"recon_{name}.nii.gz").dataobj)
        assert np.isrealobj(nifti) and np.allclose(np.sort(nifti.ravel()), np.sort(np.abs(recon).ravel()), atol=1e-6)
    assert (slab_run / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeded_and_2d_masks(tmp_path):
    for kind in ("gaussian2d", "poisson"):
        run_dir = tmp_path / kind
        assert main(["run", *FAST, f"mask.kind={kind}", "mask.acceleration=8", "~baselines.l1_wavelet",
                     f"hydra.run.dir={run_dir}"]) == 0
        y = np.load(run_dir / "measurement.npy")[0, 0]
        assert 64 * 64 / (np.abs(y) > 0).sum() == pytest.approx(8, rel=0.15)


def test_fastmri_slice_uses_the_files_kspace_and_espirit(tmp_path):
    path, = simulate_files(tmp_path / "in")
    run_dir = tmp_path / "run"
    assert main(["run", *TASK, "data=fastmri", f"data.path={path}", "data.slice=1", "mask.center_fraction=0.2",
                 "operator.kernel_width=4", f"hydra.run.dir={run_dir}"]) == 0
    with h5py.File(path) as f:
        target = f["reconstruction_rss"][1]
    truth = np.load(run_dir / "ground_truth.npy")[0, 0]
    assert np.allclose(truth, target, rtol=1e-4, atol=1e-5)
    y = np.load(run_dir / "measurement.npy")
    assert y.shape == (1, 4, 48, 48)  # readout oversampling removed
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["data"].endswith("[1]")
    assert report["methods"]["cg_sense"]["psnr"] > report["methods"]["zero_filled"]["psnr"]


@pytest.mark.parametrize("override, needle", [
    (["~prior", "samplers=dds"], "needs a prior"),
    (["data.index=9"], "data.index=9"),
    (["mask.kind=spiral"], "spiral"),
    (["mask.acceleration=1"], "acceleration"),
])
def test_config_errors_are_one_line(override, needle, tmp_path, capsys):
    code = main(["run", *FAST, *override, f"hydra.run.dir={tmp_path / 'x'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_fastmri_needs_a_path(tmp_path, capsys):
    assert main(["run", *TASK, "data=fastmri", f"hydra.run.dir={tmp_path / 'x'}"]) == 2
    assert "data.path" in capsys.readouterr().err


def test_small_espirit_centre_is_a_config_error(tmp_path, capsys):
    path, = simulate_files(tmp_path / "in")
    code = main(["run", *TASK, "data=fastmri", f"data.path={path}", f"hydra.run.dir={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert code == 2 and "mask.center_fraction" in err


def test_dds_with_the_bundled_mri_prior(tmp_path):
    from priors import available_priors

    info = available_priors()["mri-brain-256"]
    assert info["complex"] and info["channels"] == 2
    run_dir = tmp_path / "dds"
    assert main(["run", "task=mri_multicoil", "device=cpu", "data.size=128", "prior=mri_brain", "samplers=dds_mri",
                 "samplers.dds.steps=10", "baselines=[zero_filled]", f"hydra.run.dir={run_dir}"]) == 0
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["methods"]["dds"]["nfe"] == 10
    recon = np.load(run_dir / "recon_dds.npy")
    assert np.iscomplexobj(recon) and recon.shape == (1, 1, 128, 128)
    # 10 steps at 128 px (the prior saw 256 px): measured 26.4 dB against 22.9 dB zero-filled
    assert report["methods"]["dds"]["psnr"] > report["methods"]["zero_filled"]["psnr"] + 2


def test_training_set_script_writes_complex_slices_and_guards_the_held_out_slab(tmp_path):
    pytest.importorskip("nilearn")
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("make_mri_training_set", SCRIPT.parent / "make_mri_training_set.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    out = tmp_path / "train.npy"
    assert module.main(["--out", str(out), "--size", "32", "--copies", "2", "--slices-from", "60",
                        "--slices-to", "63"]) == 0
    images = np.load(out)
    assert images.shape == (6, 1, 32, 32) and images.dtype == np.complex64 and np.abs(images).max() <= 1.01
    with pytest.raises(SystemExit):
        module.main(["--out", str(tmp_path / "bad.npy"), "--slices-to", "120"])  # reaches slices >= 110
    with pytest.raises(SystemExit):
        module.main(["--out", str(out)])  # never overwrites
