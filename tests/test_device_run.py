"""``benchmarks/device_run.py``, the one prepared command a session lent a GPU runs first
(``benchmarks/DEVICE.md``): its CPU ``--smoke`` form runs every default stage end to end, a dry
run builds and validates every stage's GPU and smoke command lines (``train_priors`` too), and
the driver records failures, time-outs and the time budget without stopping."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_run.py"
DEFAULT = ["env", "tests", "projector", "run_sparse_ct", "run_mri", "run_ct3d", "run_compile", "run_bf16",
           "run_ct3d_wedge", "train_ddp", "figures"]


def _run(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    path = tmp_path / "device_run.json"
    assert path.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(path.read_text())


@pytest.fixture(scope="module")
def driver():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import device_run

    yield device_run
    sys.path.remove(str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def checks(driver):
    """``benchmarks/device/checks.py``, the env, tests and projector stages (imported by the driver)."""
    import device.checks

    return device.checks


def test_every_stage_command_line_is_built_and_validated(tmp_path):
    done, report = _run(tmp_path, "--dry-run", timeout=180)
    assert done.returncode == 0, done.stdout[-3000:]
    assert list(report["stages"]) == [*DEFAULT, "train_priors"]
    for name, rec in report["stages"].items():
        assert rec["status"] == "validated", (name, rec)
        assert rec["modes"]["gpu"] and rec["modes"]["smoke"], name
    gpu = {name: " ".join(s["command"] for s in rec["modes"]["gpu"]) for name, rec in report["stages"].items()}
    assert all("device=cuda" in gpu[n] for n in DEFAULT[3:9]) and "device=cuda" in gpu["train_priors"]
    assert "compile=true" in gpu["run_compile"] and "precision=bf16" in gpu["run_bf16"]
    assert "torch.distributed.run --standalone --nproc_per_node 1" in gpu["train_ddp"]
    assert "-m cuda" in gpu["tests"] and "tests/test_ct.py" in gpu["tests"]
    assert "--device cuda --sizes 128,256 --views 16,90 --batches 1,16,128" in gpu["projector"]
    assert "--precisions fp32,tf32,bf16" in gpu["figures"] and "--layout" not in gpu["figures"]
    assert "train.shard_mib=15" in gpu["train_priors"] and "train.export_dtype=float16" in gpu["train_priors"]
    smoke = {name: " ".join(s["command"] for s in rec["modes"]["smoke"]) for name, rec in report["stages"].items()}
    assert "compile=eager" in smoke["run_compile"] and "device=cpu" in smoke["run_sparse_ct"]
    assert "--device cpu --sizes 32 --views 8 --batches 1,4 --repeats 1" in smoke["projector"]
    assert all(rec["modes"]["gpu"][0]["checked"].endswith("arguments parse") for rec in (
        report["stages"]["projector"], report["stages"]["figures"]))
    assert (tmp_path / "device_run.log").is_file()


@pytest.mark.slow  # every stage's commands, small, one after another (several minutes)
def test_smoke_runs_every_default_stage_on_the_cpu(tmp_path):
    done, report = _run(tmp_path, "--smoke", timeout=400)
    assert done.returncode == 0, done.stdout[-3000:]
    assert report["mode"] == "smoke" and report["finished"]
    assert list(report["stages"]) == DEFAULT
    for name, rec in report["stages"].items():
        assert rec["status"] == "passed", (name, rec)
        for step in rec["steps"]:  # every step ran and passed, or needs a GPU by nature and says so
            assert step["status"] == "passed" or (step["status"] == "skipped" and step["reason"] == "no GPU"), step
            assert step["command"]
    stages = report["stages"]
    assert stages["env"]["results"]["modules"]["astra"]["version"]
    assert stages["tests"]["results"]["failed"] == 0 and stages["tests"]["results"]["errors"] == 0
    projector = stages["projector"]["results"]
    assert projector["device"] == "cpu" and projector["astra_cuda_rows"] is False and "CPU run" in projector["note"]
    pairs = {(r["backend"], r["batch"]) for r in projector["rows"]}
    assert pairs == {(b, n) for b in ("matrix", "astra") for n in (1, 4)}
    assert all(r["slices_per_s"] > 0 and r["adjoint_error"]["float32"] < 1e-5 for r in projector["rows"])
    assert projector["matrix_adjoint_error_max"]["float64"] < 1e-12
    for name in ("run_sparse_ct", "run_mri", "run_ct3d", "run_compile", "run_bf16", "run_ct3d_wedge"):
        methods = stages[name]["results"]["methods"]
        assert methods and all({"psnr", "ssim", "seconds", "nfe"} <= set(m) for m in methods.values()), name
    assert "dds_3d" in stages["run_bf16"]["results"]["vs_run_ct3d"]
    assert stages["train_ddp"]["results"]["steps_per_s"] > 0
    rows = stages["figures"]["results"]["rows"]
    assert {r["precision"] for r in rows} == {"fp32", "tf32", "bf16"}
    assert any("seconds" in r for r in rows) and all("seconds" in r or "time budget" in r["skipped"] for r in rows)
    log = (tmp_path / "device_run.log").read_text()
    assert "nvidia-smi: skipped: no GPU" in log and "summary:" in log


@pytest.mark.slow  # trains and exports two priors
def test_train_priors_smoke_delivers_two_sharded_priors_in_eight_files(tmp_path):
    done, report = _run(tmp_path, "--smoke", "--stages", "train_priors", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    rec = report["stages"]["train_priors"]
    assert rec["status"] == "passed", rec
    priors = rec["results"]["priors"]
    assert set(priors) == {"ct-phantom-gpu", "mri-brain-gpu"}
    assert all(p["loads"] and len(p["shards"]) == 3 for p in priors.values())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 8 and "device_run.json" in files and "device_run.log" in files


def test_a_failure_a_timeout_and_the_budget_are_recorded_and_the_run_goes_on(tmp_path, driver):
    py = sys.executable
    stages = [
        driver.Stage("fails", "exits 3", 30, 0, lambda ctx: [
            driver.Step("bad", [py, "-c", "print('about to fail'); raise SystemExit(3)"]),
            driver.Step("after", [py, "-c", "pass"])]),
        driver.Stage("hangs", "sleeps past its cap", 1.5, 0, lambda ctx: [
            driver.Step("sleep", [py, "-c", "import time; time.sleep(60)"])], smoke_cap_s=1.5),
        driver.Stage("works", "passes", 30, 0, lambda ctx: [
            driver.Step("ok", [py, "-c", "print('fine')"]),
            driver.Step("gpu only", ["nvidia-smi"], gpu_only=True)]),
        driver.Stage("late", "needs more time than is left", 30, 10_000, lambda ctx: []),
    ]
    args = argparse.Namespace(minutes=2.0, dry_run=False, smoke=True)
    runner = driver.Runner(args, tmp_path)
    ctx = driver.Context(True, py, tmp_path / "tmp", tmp_path, 0.05, runner.report["stages"])
    for stage in stages:
        runner.run_stage(stage, ctx)
    assert runner.finish() == 1
    report = json.loads((tmp_path / "device_run.json").read_text())
    fails, hangs, works, late = (report["stages"][n] for n in ("fails", "hangs", "works", "late"))
    assert fails["status"] == "failed" and fails["steps"][0]["rc"] == 3
    assert "about to fail" in fails["steps"][0]["tail"]
    assert fails["steps"][1] == {**fails["steps"][1], "status": "skipped", "reason": "bad failed"}
    assert hangs["status"] == "timeout" and hangs["seconds"] < 30
    assert works["status"] == "passed" and works["steps"][1]["reason"] == "no GPU"
    assert late["status"] == "skipped" and late["reason"].startswith("time budget")
    assert report["summary"]["failed"] == ["fails"] and report["summary"]["skipped"] == ["late"]
    assert "fine" in (tmp_path / "device_run.log").read_text()


def test_later_stages_reserve_time_on_the_gpu_run(tmp_path, driver):
    """On a GPU run (not --smoke) a stage leaves the time that later stages reserve (figures')."""
    py = sys.executable
    first = driver.Stage("first", "needs 5 s", 30, 5, lambda ctx: [driver.Step("ok", [py, "-c", "pass"])])
    last = driver.Stage("last", "reserves 10 s", 30, 1, lambda ctx: [driver.Step("ok", [py, "-c", "pass"])],
                        reserve_s=10)
    runner = driver.Runner(argparse.Namespace(minutes=0.2, dry_run=False, smoke=False), tmp_path)  # 12 s
    ctx = driver.Context(False, py, tmp_path / "tmp", tmp_path, 1.0, runner.report["stages"])
    runner.run_stage(first, ctx, [last])
    runner.run_stage(last, ctx, [])
    runner.finish()
    stages = json.loads((tmp_path / "device_run.json").read_text())["stages"]
    assert stages["first"]["status"] == "skipped" and "10 s kept for last" in stages["first"]["reason"]
    assert stages["last"]["status"] == "passed"


def test_tests_stage_counts_outcomes_from_progress_when_pytest_was_stopped(tmp_path, driver, checks):
    """A tests stage cut off at its limit writes no junit XML: the counts come from pytest -q's lines."""
    ctx = driver.Context(False, sys.executable, tmp_path, tmp_path, 1.0, {})
    rec = {"steps": [{"name": "pytest", "output": "..F.s.....s" + " " * 40 + "[ 50%]\n..E"}]}
    with pytest.raises(RuntimeError, match="junit"):
        checks.collect_tests(ctx, rec)
    assert {k: rec["results"][k] for k in ("passed", "failed", "errors", "skipped")} == {
        "passed": 10, "failed": 1, "errors": 1, "skipped": 2}


def test_projector_stage_records_whether_astra_cuda_was_measured(tmp_path, driver, checks):
    """On the GPU, the astra rows are its CUDA projector: present, their adjoint error is summarised;
    absent because astra has no CUDA build, a note says so; absent although it has one, the stage fails."""
    ctx = driver.Context(False, sys.executable, tmp_path, tmp_path, 1.0, {})

    def row(backend, batch, error):
        return {"kind": "fan", "size": 128, "views": 16, "backend": backend, "batch": batch,
                "slices_per_second": 1234.5678, "seconds": 0.1, "build_seconds": 0.5 if backend == "matrix" else None,
                "matrix_mib": 12.3456 if backend == "matrix" else None, "adjoint_error": error}

    def collect(use_cuda, rows, rec=None):
        (tmp_path / "projector.json").write_text(json.dumps(
            {"machine": "H100", "device": "cuda", "astra_use_cuda": use_cuda, "rows": rows}))
        return checks.collect_projector(ctx, {"steps": []} if rec is None else rec)

    matrix = [row("matrix", n, {"float32": 2e-9, "float64": 1e-17}) for n in (1, 16)]
    out = collect(True, matrix + [row("astra", n, {"float32": e}) for n, e in ((1, 3e-3), (16, 4e-3))])
    assert out["astra_cuda_rows"] is True and out["astra_cuda_adjoint_error_max"] == 4e-3 and "note" not in out
    assert out["rows"][0] == {"geometry": "fan 128x128, 16 views", "backend": "matrix", "batch": 1,
                              "slices_per_s": 1235.0, "matrix_mib": 12.3, "build_s": 0.5,
                              "adjoint_error": {"float32": 2e-9, "float64": 1e-17}}
    out = collect(False, matrix)
    assert out["astra_cuda_rows"] is False and "not measured" in out["note"]
    rec = {"steps": []}
    with pytest.raises(RuntimeError, match="no astra CUDA rows"):
        collect(True, matrix, rec)
    assert len(rec["results"]["rows"]) == 2  # what was measured stays in the record
