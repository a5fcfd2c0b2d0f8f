"""``python -m recon batch``: fastMRI layout, fastMRI metrics, resume, bad files, read-only input."""

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest
from fastmri_files import simulate

from recon.app import main
from recon.io.fastmri import read_fastmri
from recon.metrics import evaluate

pytest.importorskip("sigpy")

METHODS = ("zero_filled", "cg_sense", "l1_wavelet")
# tiny files: a 10-column fully sampled centre and a 4-wide ESPIRiT kernel
SMALL = ["mask.center_fraction=0.2", "operator.kernel_width=4", "baselines.l1_wavelet.iterations=10",
         "device=cpu", "batch_size=2", "samplers=[]"]  # the task's diffusion sampler: test_batch_sampler.py


def add_bad_files(folder, good):
    """Truncated, no kspace, wrong rank, NaN: each must fail alone, named with its reason."""
    data = good.read_bytes()
    (folder / "truncated.h5").write_bytes(data[: len(data) // 2])
    with h5py.File(folder / "no_kspace.h5", "w") as f:
        f["reconstruction_rss"] = np.zeros((2, 48, 48), np.float32)
    with h5py.File(folder / "rank3.h5", "w") as f:
        f["kspace"] = np.zeros((2, 96, 48), np.complex64)
    with h5py.File(good) as src, h5py.File(folder / "nan.h5", "w") as f:
        kspace = src["kspace"][()]
        kspace[1, 0, 5, 5] = np.nan
        f["kspace"] = kspace
        f["ismrmrd_header"] = src["ismrmrd_header"][()]
    return {"truncated.h5": "truncated", "no_kspace.h5": "kspace", "rank3.h5": "shape", "nan.h5": "NaN"}


def checksums(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def run_batch(root, output, *extra):
    return main(["batch", f"data.root={root}", f"output={output}", *SMALL, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("batch")
    root = base / "in"
    good = simulate(root)
    bad = add_bad_files(root, good[0])
    before = checksums(root)
    code = run_batch(root, base / "out")
    return root, base / "out", good, bad, before, code


def test_outputs_in_fastmri_layout_with_fastmri_metrics(finished):
    root, out, good, _, _, code = finished
    assert code == 1  # some inputs failed
    for path in good:
        volume = read_fastmri(path)
        target = np.stack([volume.target(i) for i in range(volume.num_slices)])
        for method in METHODS:
            with h5py.File(out / method / path.name) as f:
                recon = f["reconstruction"][()]
                assert recon.dtype == np.float32 and recon.shape == (3, 48, 48)
                assert f["mask"].shape == (48,) and f.attrs["method"] == method
                assert f.attrs["acceleration"] == pytest.approx(48 / f["mask"][()].sum())
                assert f.attrs["center_fraction"] == pytest.approx(0.2)
            record = json.loads((out / "per_volume" / method / f"{path.stem}.json").read_text())
            assert record["slices"] == 3 and record["seconds"] >= 0
            expected = evaluate(recon, target)
            assert record["metrics"] == pytest.approx(expected)
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["methods"]
    assert list(rows) == list(METHODS) and all(r["volumes"] == 2 == r["scored"] for r in rows.values())
    assert rows["cg_sense"]["psnr"] > rows["zero_filled"]["psnr"] > 15
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0] == "method,volumes,scored,psnr,ssim,ssim_object,nmse,seconds_per_slice" and len(csv) == 4
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_bad_files_are_reported_and_skipped(finished, capsys):
    root, out, _, bad, _, _ = finished
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["failed"]) == set(bad)
    for name, needle in bad.items():
        assert needle.lower() in summary["failed"][name].lower(), (name, summary["failed"][name])
        assert not any((out / m / name).exists() for m in METHODS)


def test_input_folder_is_untouched(finished):
    root, _, _, _, before, _ = finished
    assert checksums(root) == before


def test_rerun_skips_finished_volumes_and_redoes_missing_ones(finished, capsys):
    root, out, good, _, before, _ = finished
    outputs = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in {".h5", ".json"} and "summary" not in p.name)
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    (out / "cg_sense" / good[1].name).unlink()
    assert run_batch(root, out) == 1
    capsys.readouterr()
    changed = {p for p in outputs if not p.exists() or p.stat().st_mtime_ns != stamps[p]}
    assert changed == {out / "cg_sense" / good[1].name, out / "per_volume" / "cg_sense" / f"{good[1].stem}.json"}
    assert (out / "cg_sense" / good[1].name).is_file()
    assert checksums(root) == before


def test_batch_size_does_not_change_deterministic_results(finished, tmp_path):
    root, out, good, _, _, _ = finished
    clean = tmp_path / "in"
    clean.mkdir()
    shutil.copy(good[0], clean / good[0].name)
    assert run_batch(clean, tmp_path / "out", "batch_size=3", "~baselines.l1_wavelet") == 0
    for method in ("zero_filled", "cg_sense"):
        with h5py.File(out / method / good[0].name) as a, h5py.File(tmp_path / "out" / method / good[0].name) as b:
            assert np.allclose(a["reconstruction"][()], b["reconstruction"][()], rtol=1e-4, atol=1e-6)


def test_test_set_file_uses_its_own_mask_and_has_no_metrics(finished, tmp_path):
    _, _, good, _, _, _ = finished
    root = tmp_path / "in"
    root.mkdir()
    with h5py.File(good[0]) as src, h5py.File(root / "test.h5", "w") as f:
        mask = np.zeros(48, np.float32)
        mask[::3] = 1
        mask[19:29] = 1
        f["kspace"] = src["kspace"][()] * mask
        f["mask"] = mask
        f["ismrmrd_header"] = src["ismrmrd_header"][()]
    assert run_batch(root, tmp_path / "out", "~baselines.l1_wavelet", "~baselines.cg_sense") == 0
    with h5py.File(tmp_path / "out" / "zero_filled" / "test.h5") as f:
        assert np.array_equal(f["mask"][()], mask) and "center_fraction" not in f.attrs
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["methods"]["zero_filled"]["scored"] == 0 and summary["methods"]["zero_filled"]["psnr"] is None


@pytest.mark.parametrize("args, needle", [
    (["data.root={root}"], "output"),
    (["data.root={root}/absent", "output={tmp}/o"], "not a folder"),
    (["data.root={root}", "output={root}/sub"], "outside data.root"),
    (["data.root={root}", "output={tmp}/o", "mask.kind=spiral"], "spiral"),
    (["data.root={tmp}", "output={tmp}/../o2"], "no *.h5"),
])
def test_config_errors_exit_2(finished, tmp_path, capsys, args, needle):
    root = finished[0]
    code = main(["batch", *[a.format(root=root, tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.slow  # starts a local Ray cluster
def test_ray_executor_matches_local_resumes_and_reports_bad_files(finished, tmp_path):
    """executor=ray on a local Ray instance: identical outputs, the same failures, and a rerun
    that rewrites nothing but the missing volume."""
    pytest.importorskip("ray")
    root, out, good, bad, before, _ = finished
    ray_out = tmp_path / "ray"
    assert run_batch(root, ray_out, "executor=ray", "ray.num_cpus=2") == 1
    for path in good:
        for method in METHODS:
            with h5py.File(out / method / path.name) as a, h5py.File(ray_out / method / path.name) as b:
                local, remote = a["reconstruction"][()], b["reconstruction"][()]
                # zero-filled and CG-SENSE agree exactly; sigpy's L1-wavelet to 3e-5 of the maximum
                assert np.abs(local - remote).max() <= 1e-4 * np.abs(local).max(), method
    summary = json.loads((ray_out / "summary.json").read_text())
    assert set(summary["failed"]) == set(bad)
    assert all(r["volumes"] == 2 for r in summary["methods"].values())
    stamps = {p: p.stat().st_mtime_ns for p in ray_out.rglob("*.h5")}
    (ray_out / "l1_wavelet" / good[0].name).unlink()
    assert run_batch(root, ray_out, "executor=ray", "ray.num_cpus=2") == 1
    changed = {p for p in stamps if not p.exists() or p.stat().st_mtime_ns != stamps[p]}
    assert changed == {ray_out / "l1_wavelet" / good[0].name} and (ray_out / "l1_wavelet" / good[0].name).is_file()
    assert checksums(root) == before


def test_unknown_executor_is_a_config_error(finished, tmp_path, capsys):
    root, *_ = finished
    assert run_batch(root, tmp_path / "x", "executor=slurm") == 2
    assert "executor=slurm" in capsys.readouterr().err
