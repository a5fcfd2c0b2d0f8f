"""The prepared GPU check: every stage a subprocess with its own time limit, one JSON and one log.

    bash benchmarks/device_run.sh --minutes 7.5            # on a lent GPU (unpacks .device first)
    bash benchmarks/device_run.sh --stages train_priors --train-minutes 2   # the separate training call
    python benchmarks/device_run.py --smoke --out DIR      # the same stages on the CPU, tiny sizes
    python benchmarks/device_run.py --dry-run              # build and validate every command, run none

Stages (``--stages a,b`` selects; default all but ``train_priors``), defined in the package
``benchmarks/device/`` beside this driver (``checks``, ``runs``, ``training``; the table in its
``__init__``):

=============== ==========================================================================
env             nvidia-smi, torch/CUDA versions, the device, astra (imports, ``use_cuda``,
                its CUDA projector against the CPU one), where each packed module came from
tests           ``pytest -m cuda`` over the test files that mark tests ``cuda``
projector       ``benchmarks/ct_projector.py --device cuda``: slices/s of projection plus
                backprojection and the adjoint error of the system-matrix backend and, where
                astra has a CUDA build (recorded), of astra's CUDA projector
run_sparse_ct   ``python -m recon run task=sparse_ct device=cuda``
run_mri         ``task=mri_multicoil prior=mri_brain samplers=dds_mri device=cuda``
run_ct3d        ``task=ct3d_sparse device=cuda``
run_compile     ``task=sparse_ct device=cuda compile=true`` (against run_sparse_ct)
run_bf16        ``task=ct3d_sparse device=cuda precision=bf16`` (PSNR against run_ct3d)
train_ddp       ``torchrun --standalone --nproc_per_node 1 -m recon train`` (NCCL), 40 steps
figures         ``benchmarks/gpu_figures.py --precisions fp32,tf32,bf16`` in the time left
train_priors    (explicit only) a CT and an MRI prior with 4x the bundled width, each trained for
                ``--train-minutes``, exported as float16 shards of <= 15 MiB into the output
                folder (2 x 3 shards + JSON + log: the 8 files a device call returns)
=============== ==========================================================================

This module is the driver: the arguments, the time budget and each stage's and step's limit,
running the steps (each in its own process group, output streamed to stdout and the log), the
dry run's validation, and writing the JSON and the log. Nothing stops the run: a failed or
timed-out stage is recorded (command, exit status, seconds, the tail of its output) and the next
one starts. ``device_run.json`` in the output folder (``--out``, default ``$OUT``, else
``outputs/device_run``) is rewritten after every step, so a run cut off keeps what finished;
``device_run.log`` holds everything printed. The overall budget is ``--minutes``; each stage has
its own cap, the stages before ``figures`` leave it 120 s, and a stage that would start with less
than its minimum left is recorded as skipped (reason "time budget"). ``--smoke`` runs the same
stages on the CPU at tiny sizes (GPU-only steps such as nvidia-smi are recorded as "skipped: no
GPU").
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:  # imported, or run with -m: the stages' package lies beside this file
    sys.path.insert(0, str(BENCHMARKS))

from device import STAGE, STAGES  # noqa: E402
from device.stage import REPO, Context, Stage, Step  # noqa: E402

COMMAND_CHARS = 600  # a step's command as recorded in the JSON and the log


def command_text(argv: list[str]) -> str:
    command = shlex.join(argv)
    return command if len(command) < COMMAND_CHARS else command[:COMMAND_CHARS] + " ..."


# --- running ----------------------------------------------------------------------------------
class Runner:
    """Runs stages, streams every output line to stdout and the log, keeps the JSON current."""

    def __init__(self, args: argparse.Namespace, out: Path):
        self.args, self.out = args, out
        out.mkdir(parents=True, exist_ok=True)
        self.log_path, self.json_path = out / "device_run.log", out / "device_run.json"
        self.log_file = self.log_path.open("a", encoding="utf-8", errors="replace")
        self.lock = threading.Lock()
        self.start = time.time()
        self.deadline = self.start + 60 * args.minutes
        self.report: dict[str, Any] = {
            "tool": "benchmarks/device_run.py", "mode": "dry-run" if args.dry_run else "smoke" if args.smoke else "gpu",
            "argv": sys.argv[1:], "started": _now(), "finished": None, "budget_s": 60 * args.minutes,
            "elapsed_s": 0.0, "unpack": os.environ.get("DEVICE_RUN_UNPACK"), "out": str(out), "stages": {},
        }

    def log(self, message: str) -> None:
        line = f"[device_run {time.strftime('%H:%M:%S')} +{time.time() - self.start:6.1f}s] {message}"
        self._write(line)

    def _write(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def save(self) -> None:
        """Rewrite the JSON (atomically; steps' full outputs stay out of it: they are in the log)."""
        self.report["elapsed_s"] = round(time.time() - self.start, 1)
        tmp = self.json_path.with_name(".device_run.json.tmp")
        tmp.write_text(json.dumps(_without_output(self.report), indent=1, default=str))
        os.replace(tmp, self.json_path)

    def left(self) -> float:
        return self.deadline - time.time()

    def run_step(self, step: Step, timeout: float) -> dict[str, Any]:
        command = command_text(step.argv)
        rec: dict[str, Any] = {"name": step.name, "command": command, "timeout_s": round(timeout, 1)}
        self.log(f"$ {command}   (limit {timeout:.0f} s)")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "TQDM_MININTERVAL": "30",
               "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p),
               **step.env}
        lines: list[str] = []
        start = time.perf_counter()
        try:
            kwargs: dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
            proc = subprocess.Popen(step.argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kwargs)
        except OSError as err:
            rec.update(rc=None, seconds=0.0, status="failed", error=f"{type(err).__name__}: {err}", output="",
                       tail=str(err))
            self.log(f"  could not start: {err}")
            return rec

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]  # progress bars
                lines.append(text)
                self._write("  | " + text)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.log(f"  {step.name}: over its {timeout:.0f} s limit: stopping it")
            _kill_group(proc)
        else:
            _kill_group(proc, only_strays=True)  # helpers it left behind in its group (compile workers, ...)
        reader.join(timeout=10)
        seconds = time.perf_counter() - start
        output = "\n".join(lines)
        status = "timeout" if timed_out else "passed" if proc.returncode == 0 else "failed"
        rec.update(rc=proc.returncode, seconds=round(seconds, 2), status=status, output=output)
        if status != "passed":
            rec["tail"] = "\n".join(lines[-40:])[-4000:]
        self.log(f"  {step.name}: {status} (exit {proc.returncode}) in {seconds:.1f} s")
        return rec

    def run_stage(self, stage: Stage, ctx: Context, later: list[Stage] = ()) -> dict[str, Any]:
        """Run ``stage`` within its cap and the budget left, less what the ``later`` stages reserve."""
        rec: dict[str, Any] = {"status": "running", "summary": stage.summary, "started_at_s": round(
            time.time() - self.start, 1), "steps": []}
        self.report["stages"][stage.name] = rec
        reserved = 0.0 if ctx.smoke else sum(s.reserve_s for s in later)
        left = self.left() - reserved
        cap = stage.smoke_cap_s if ctx.smoke else stage.cap_s
        if left < stage.min_s:
            kept = f", {reserved:.0f} s kept for {', '.join(s.name for s in later if s.reserve_s)}" if reserved else ""
            rec.update(status="skipped",
                       reason=f"time budget ({max(left, 0):.0f} s left{kept}, needs {stage.min_s:.0f} s)")
            self.log(f"== {stage.name}: skipped, {rec['reason']}")
            self.save()
            return rec
        ctx.stage_timeout_s = min(cap, left)
        stage_deadline = time.time() + ctx.stage_timeout_s
        self.log(f"== {stage.name}: {stage.summary} (limit {ctx.stage_timeout_s:.0f} s, {left:.0f} s of the budget left)")
        self.save()
        start = time.perf_counter()
        try:
            steps = stage.build(ctx)
        except Exception as err:
            rec.update(status="failed", reason=f"could not build its commands: {type(err).__name__}: {err}",
                       tail=traceback.format_exc()[-3000:], seconds=0.0)
            self.log(f"== {stage.name}: failed: {rec['reason']}")
            self.save()
            return rec
        aborted: str | None = None
        notes = []
        for step in steps:
            skip = ("no GPU" if ctx.smoke and step.gpu_only else aborted
                    or ("time budget" if stage_deadline - time.time() < 1 else None))
            if skip:
                rec["steps"].append({"name": step.name, "command": command_text(step.argv), "status": "skipped",
                                     "reason": skip})
                notes.append(f"{step.name}: skipped: {skip}")
                self.log(f"  {step.name}: skipped: {skip}")
                continue
            limit = min(stage_deadline - time.time(), step.timeout_s or float("inf"))
            result = self.run_step(step, limit)
            rec["steps"].append(result)
            if result["status"] != "passed" and step.required:
                aborted = f"{step.name} {result['status']}"
            self.save()
        rec["seconds"] = round(time.perf_counter() - start, 1)
        ran = [s for s in rec["steps"] if s["status"] != "skipped" or s.get("reason") != "no GPU"]
        bad = [s for s in ran if s["status"] != "passed"]
        rec["status"] = "passed" if not bad else "timeout" if any(s["status"] == "timeout" for s in bad) else "failed"
        if notes:
            rec["notes"] = notes
        if stage.collect is not None:
            try:
                rec["results"] = stage.collect(ctx, rec)
            except Exception as err:  # what was collected before the problem stays (see collect_env)
                rec["status"] = "failed" if rec["status"] == "passed" else rec["status"]
                rec["collect_error"] = f"{type(err).__name__}: {err}"
        for s in rec["steps"]:
            s.pop("output", None)
        self.log(f"== {stage.name}: {rec['status']} in {rec['seconds']:.1f} s"
                 + (f" ({rec['collect_error']})" if "collect_error" in rec else ""))
        self.save()
        return rec

    def finish(self) -> int:
        self.report["finished"] = _now()
        stages = self.report["stages"]
        self.report["summary"] = {k: [n for n, r in stages.items() if r["status"] == k]
                                  for k in ("passed", "failed", "timeout", "skipped", "validated")}
        self.save()
        self.log("summary: " + ", ".join(f"{n} {r['status']}" + (f" ({r.get('seconds', 0):.0f} s)" if "seconds" in r
                                                                   else "") for n, r in stages.items()))
        self.log(f"wrote {self.json_path} and {self.log_path}")
        self.log_file.close()
        return 0 if all(r["status"] in ("passed", "skipped", "validated") for r in stages.values()) else 1


def _without_output(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_output(v) for k, v in value.items() if k != "output"}
    if isinstance(value, list):
        return [_without_output(v) for v in value]
    return value


def _kill_group(proc: subprocess.Popen, only_strays: bool = False) -> None:
    """End the step's process group (it was started as its leader): TERM, then KILL. With
    ``only_strays`` the step has exited and whatever is left of its group is killed."""
    if only_strays:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- validation (--dry-run) ------------------------------------------------------------------
PARSED_SCRIPTS = ("gpu_figures.py", "ct_projector.py")  # benchmarks/ scripts with a build_parser()


def validate(step: Step) -> str:
    """Check a step's command without running it: Hydra overrides compose, scripts and files
    exist, the arguments of the scripts in :data:`PARSED_SCRIPTS` parse. Returns what was checked;
    raises on a problem."""
    argv = step.argv
    if str(REPO) not in sys.path:  # recon, priors, operators (the benchmark scripts import them)
        sys.path.insert(0, str(REPO))
    if "recon" in argv and argv[argv.index("recon") - 1] == "-m":
        at = argv.index("recon")
        command, overrides = argv[at + 1], argv[at + 2:]
        from omegaconf import OmegaConf

        from recon.config import load_config

        cfg = load_config(overrides, config_name={"run": "config", "train": "train"}[command])
        if command == "train":
            from priors.train import TrainSettings

            TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True), seed=int(cfg.seed))
        return f"recon {command}: {len(overrides)} overrides compose"
    if argv[0] == "nvidia-smi":
        return "nvidia-smi (on the GPU machine)"
    if "pytest" in argv:
        files = [a for a in argv if a.startswith("tests/")]
        if not files or not all((REPO / f).is_file() for f in files):
            raise ValueError(f"pytest: no cuda test files ({files})")
        return f"pytest over {len(files)} files"
    if argv[1:2] == ["-c"]:
        compile(argv[2], step.name, "exec")
        return "python -c: compiles"
    script = Path(argv[1])
    if not script.is_file():
        raise ValueError(f"{script}: no such script")
    if script.name in PARSED_SCRIPTS and script.parent == BENCHMARKS:
        importlib.import_module(script.stem).build_parser().parse_args(argv[2:])
        return f"{script.stem}: arguments parse"
    return f"{script.name}: exists"


def dry_run(runner: Runner, ctx: Context, stages: list[Stage]) -> None:
    for stage in stages:
        rec: dict[str, Any] = {"status": "validated", "summary": stage.summary, "modes": {}}
        runner.report["stages"][stage.name] = rec
        for smoke in (False, True):
            ctx.smoke, ctx.stage_timeout_s = smoke, stage.smoke_cap_s if smoke else min(stage.cap_s, 600)
            mode = "smoke" if smoke else "gpu"
            try:
                checked = [{"name": s.name, "command": command_text(s.argv), "checked": validate(s)}
                           for s in stage.build(ctx)]
                rec["modes"][mode] = checked
            except Exception as err:
                rec["status"] = "failed"
                rec["modes"][mode] = {"error": f"{type(err).__name__}: {err}"[:1000]}
        runner.log(f"== {stage.name}: {rec['status']}")
        runner.save()


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--smoke", action="store_true", help="on the CPU at tiny sizes (the test suite's check)")
    parser.add_argument("--dry-run", action="store_true",
                        help="build and validate every stage's commands (GPU and smoke), run none")
    parser.add_argument("--stages", default=None,
                        help="comma-separated (default: all but train_priors; with --dry-run: all)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="overall budget (default 7.5; for train_priors alone 2 x --train-minutes + 3.5)")
    parser.add_argument("--train-minutes", type=float, default=2.0, help="train_priors: minutes per prior")
    parser.add_argument("--out", type=Path, default=None, help="default $OUT, else outputs/device_run")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary run folders")
    args = parser.parse_args(argv)
    if args.stages:
        names = [n.strip() for n in args.stages.split(",") if n.strip()]
        if unknown := [n for n in names if n not in STAGE]:
            parser.error(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGE)}")
        stages = [STAGE[n] for n in names]
    else:
        stages = [s for s in STAGES if s.default or args.dry_run]
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "outputs" / "device_run")
    out = out.resolve()
    if args.smoke and any(s.name == "train_priors" for s in stages) and args.train_minutes == 2.0:
        args.train_minutes = 0.05
    if args.minutes is None:
        only_training = [s.name for s in stages] == ["train_priors"] and not args.dry_run
        args.minutes = 2 * args.train_minutes + 3.5 if only_training else 7.5
    runner = Runner(args, out)
    tmp = Path(tempfile.mkdtemp(prefix="device_run_"))
    ctx = Context(args.smoke, sys.executable, tmp, out, args.train_minutes, runner.report["stages"])
    runner.log(f"device_run: {runner.report['mode']}, stages {', '.join(s.name for s in stages)}; budget "
               f"{args.minutes:g} min; output {out}; temporary {tmp}")
    if runner.report["unpack"]:
        runner.log(f"packed site: {runner.report['unpack']}")
    try:
        if args.dry_run:
            dry_run(runner, ctx, stages)
        else:
            for i, stage in enumerate(stages):
                runner.run_stage(stage, ctx, stages[i + 1:])
    except KeyboardInterrupt:
        runner.log("interrupted")
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
