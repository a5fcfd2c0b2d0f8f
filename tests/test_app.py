"""The ``python -m recon`` application: a run folder, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from recon.app import main

FAST = ["data.size=64", "baselines.tv.iterations=60", "samplers.dds.steps=8", "seed=3"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    code = main(["run", "task=sparse_ct", f"hydra.run.dir={run_dir}", *FAST])
    assert code == 0
    return run_dir


def test_run_writes_a_complete_folder(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    for method in ("fbp", "tv", "dds"):
        assert {f"recon_{method}.npy", f"recon_{method}.nii.gz"} <= names
    assert {"ground_truth.npy", "measurement.npy", "metrics.json", "panel.png", "config.yaml"} <= names
    assert not [n for n in names if n.startswith(".")], "temporary files left behind"
    report = json.loads((finished_run / "metrics.json").read_text())
    assert report["task"] == "sparse_ct"
    for method in ("fbp", "tv", "dds"):
        assert set(report["methods"][method]) >= {"psnr", "ssim", "nmse", "seconds", "nfe"}
    assert report["methods"]["dds"]["nfe"] == 8 and report["methods"]["fbp"]["nfe"] == 0
    # TV beats FBP at 16 noisy views; both are real reconstructions of the phantom
    assert report["methods"]["tv"]["psnr"] > report["methods"]["fbp"]["psnr"]
    assert report["methods"]["fbp"]["psnr"] > 15
    assert np.load(finished_run / "measurement.npy").shape[2] == 16
    assert (finished_run / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_measurement_and_reconstruction(finished_run, tmp_path):
    again = tmp_path / "again"
    assert main(["run", f"hydra.run.dir={again}", "data.size=64", "samplers.dds.steps=8", "seed=3", "baselines=[fbp]"]) == 0
    for name in ("measurement.npy", "recon_dds.npy"):
        assert np.array_equal(np.load(finished_run / name), np.load(again / name)), name
    other = tmp_path / "other"
    assert main(["run", f"hydra.run.dir={other}", "data.size=64", "samplers.dds.steps=8", "seed=4", "baselines=[]"]) == 0
    assert not np.array_equal(np.load(again / "recon_dds.npy"), np.load(other / "recon_dds.npy"))


def test_dps_and_baselines_only(tmp_path):
    assert main(["run", f"hydra.run.dir={tmp_path / 'dps'}", "data.size=32", "samplers=dps", "samplers.dps.steps=4",
                 "baselines=[]"]) == 0
    report = json.loads((tmp_path / "dps" / "metrics.json").read_text())
    assert list(report["methods"]) == ["dps"] and report["methods"]["dps"]["nfe"] == 4
    assert main(["run", f"hydra.run.dir={tmp_path / 'none'}", "data.size=32", "samplers=[]"]) == 0
    assert set(json.loads((tmp_path / "none" / "metrics.json").read_text())["methods"]) == {"fbp", "tv"}


def test_an_existing_run_folder_is_never_overwritten(finished_run, capsys):
    before = (finished_run / "metrics.json").read_bytes()
    code, _, err = run_cli(["run", f"hydra.run.dir={finished_run}", *FAST], capsys)
    assert code == 2
    assert "not empty" in err and str(finished_run) in err
    assert (finished_run / "metrics.json").read_bytes() == before


def test_file_input_and_overrides(tmp_path, capsys):
    from recon.data.phantoms import make_phantom

    path = tmp_path / "truth.npy"
    np.save(path, make_phantom("head", "test", 2, 48))
    code, out, _ = run_cli(["run", "data=file", f"data.path={path}", "data.pixel_size_cm=0.52", "operator.views=8",
                            "baselines=[fbp]", "samplers=[]", f"hydra.run.dir={tmp_path / 'out'}"], capsys)
    assert code == 0, out
    assert np.load(tmp_path / "out" / "measurement.npy").shape[2] == 8
    assert "fbp" in out and "PSNR" in out


def write_bad_inputs(tmp_path):
    nan = np.ones((32, 32), np.float32)
    nan[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "line.npy", np.ones(32, np.float32))
    (tmp_path / "garbage.npy").write_bytes(b"this is not a numpy file")
    return {
        "missing": (tmp_path / "absent.npy", "absent.npy"),
        "nan": (tmp_path / "nan.npy", "nan"),
        "shape": (tmp_path / "line.npy", "line.npy"),
        "garbage": (tmp_path / "garbage.npy", "garbage.npy"),
    }


@pytest.mark.parametrize("case", ["missing", "nan", "shape", "garbage"])
def test_bad_data_files_give_one_line_naming_the_file(case, tmp_path, capsys):
    path, needle = write_bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    code, _, err = run_cli(["run", "data=file", f"data.path={path}", f"hydra.run.dir={out_dir}"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path.name) in lines[0] and needle.lower() in lines[0].lower()
    assert not out_dir.exists(), "a failed run must not leave a run folder"


@pytest.mark.parametrize("override, needle", [
    (["operator.vews=8"], "operator.vews"),
    (["task=no_such_task"], "no_such_task"),
    (["data=file"], "data.path"),
    (["device=tpu"], "device=tpu"),
    (["device=cuda:99"], "device=cuda:99"),
    (["operator.backend=gpu"], "backend"),
    (["operator.detector_count=0"], "detector_count"),
    (["baselines.tv.wieght=3"], "baselines.tv has no 'wieght'; it has: _target_, weight, iterations"),
    (["samplers.pigdm.steps=3"], "samplers has no 'pigdm'; it has: dds"),
    (["operator.views=oops"], "views"),
    (["prior.checkpoint=/no/such/prior.safetensors"], "prior.yaml"),
    (["prior.name=no-such-prior"], "no-such-prior"),
    (["samplers=nope"], "nope"),
])
def test_bad_overrides_give_one_line_naming_the_key(override, needle, tmp_path, capsys):
    code, _, err = run_cli(["run", *override, f"hydra.run.dir={tmp_path / 'x'}"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_unknown_command_and_help(capsys):
    assert run_cli(["frobnicate"], capsys)[0] == 2
    code, out, _ = run_cli(["run", "--help"], capsys)
    assert code == 0 and "task" in out and "sparse_ct" in out


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recon", "run", "data=file", f"data.path={tmp_path / 'nope.npy'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "nope.npy" in proc.stderr
