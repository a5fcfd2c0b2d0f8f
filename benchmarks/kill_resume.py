"""Crash anywhere, resume to the same result: SIGKILL ``recon batch`` / ``recon train`` at random instants.

For each target (``batch``: baselines and a seeded DDS sampler on tiny simulated fastMRI files;
``train``: a tiny prior) the harness runs the command once uninterrupted (the reference), then
``--trials`` times: starts it in a fresh output folder, kills it with SIGKILL after a delay drawn
uniformly (seeded) between 0.8 x the reference's time to its first output file and its total
duration (the window where files are written), checks that no file under a final
(non-hidden) name is partial, reruns it to completion and compares every output with the reference:

* HDF5: every dataset byte-equal, root attributes equal;
* JSON / CSV: equal except timing fields (``seconds``, ``maps_seconds``, ``*_per_slice``);
* ``.safetensors``: byte-equal (the exported EMA weights);
* model card ``.yaml``: equal except ``training.wall_time_s``;
* ``train_state.pt``: network, EMA and optimiser states and the step equal, i.e. the resumed
  training followed the uninterrupted trajectory to the same final state (per-step losses are not
  stored, so "same trajectory" is checked through this final state, which every step feeds).

Hidden names (``.NAME.xxxx.tmp``, the atomic writer's temporaries) may remain after a kill.

    python benchmarks/kill_resume.py --trials 50 --min-killed 50 [--targets batch train] [--seed 0] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "maps_seconds", "seconds_per_slice", "maps_seconds_per_slice", "wall_time_s"}
BATCH_SETTINGS = ["mask.center_fraction=0.2", "operator.kernel_width=4", "baselines.l1_wavelet.iterations=10",
                  "device=cpu", "batch_size=1", "prior=mri_brain", "samplers=dds_mri", "samplers.dds.steps=3"]
TRAIN_SETTINGS = ["prior.data.count=4", "prior.data.size=32", "train.steps=12", "train.batch_size=2",
                  "train.crop=32", "train.warmup=1", "train.checkpoint_every=2", "eval_images=2", "device=cpu",
                  "prior.network.num_channels=32", "prior.network.channel_mult='1,2'"]


def simulate(folder: Path, num_files: int = 3, slices: int = 2) -> None:
    """Tiny fastMRI multi-coil files (``data_scripts/simulate_fastmri.py``) in ``folder``."""
    cmd = [sys.executable, str(ROOT / "data_scripts" / "simulate_fastmri.py"), "--out", str(folder),
           f"--num-files={num_files}", "--coils=4", f"--slices={slices}", "--size=48", "--slices-from=60",
           "--slices-to=80", "--slice-step=3"]
    subprocess.run(cmd, check=True, capture_output=True)
    (folder / "manifest.json").unlink(missing_ok=True)


def command(target: str, out: Path, data: Path | None = None, settings: list[str] | None = None) -> list[str]:
    """The ``python -m recon`` command line of ``target`` writing to ``out`` (``settings``: the
    overrides, default :data:`BATCH_SETTINGS` or :data:`TRAIN_SETTINGS`)."""
    if target == "batch":
        args = ["batch", f"data.root={data}", f"output={out}", *(BATCH_SETTINGS if settings is None else settings)]
    elif target == "train":
        args = ["train", f"out={out}", *(TRAIN_SETTINGS if settings is None else settings)]
    else:
        raise ValueError(f"unknown target {target}")
    return [sys.executable, "-m", "recon", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "RECON_CPU_ALLOCATOR": "system", "PYTHONPATH": str(ROOT)}


def run(cmd: list[str]) -> float:
    """Run ``cmd`` to completion (it must succeed); returns its wall time in seconds."""
    tic = time.perf_counter()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - tic


def timed_reference(cmd: list[str], out: Path) -> tuple[float, float]:
    """Run ``cmd`` to completion, polling ``out``; ``(seconds to its first visible output file,
    total seconds)``. Kills are drawn within this window, where outputs are being written (before
    it the process is importing and computing: nothing to corrupt)."""
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tic, first = time.perf_counter(), None
    while proc.poll() is None:
        if first is None and out.is_dir() and visible_files(out):
            first = time.perf_counter() - tic
        time.sleep(0.02)
    total = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    return (total if first is None else first), total


def kill_after(cmd: list[str], delay: float, watch: Path | None = None) -> bool:
    """Start ``cmd``, SIGKILL its process group after ``delay`` s (counted from the moment a new
    output file appears under ``watch``, when given); whether it was still running."""
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if watch is not None:
            before = len(visible_files(watch)) if watch.is_dir() else 0
            while proc.poll() is None and (len(visible_files(watch)) if watch.is_dir() else 0) <= before:
                time.sleep(0.01)
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` whose path has no hidden part (temporaries are hidden) and no logs."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".log"
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _drop_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_drop_timing(v) for v in obj]
    return obj


def _h5(path: Path) -> Any:
    with h5py.File(path, "r") as f:
        data = {key: (f[key].dtype.str, f[key].shape, f[key][()].tobytes()) for key in f}
        attrs = {key: np.asarray(value).tolist() for key, value in f.attrs.items()}
    return data, attrs


def _csv(path: Path) -> Any:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    if not rows:
        raise ValueError("no rows")
    return _drop_timing(rows)


def _safetensors(path: Path) -> Any:
    from safetensors.numpy import load_file

    return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in load_file(str(path)).items()}


def _state(path: Path) -> Any:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {"step": state["step"], **{k: _tensors(state[k]) for k in ("network", "ema", "optimizer")}}


def _tensors(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return (str(obj.dtype), tuple(obj.shape), obj.numpy().tobytes())
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tensors(v) for v in obj]
    return obj


READERS: dict[str, Callable[[Path], Any]] = {
    ".h5": _h5, ".json": lambda p: _drop_timing(json.loads(p.read_text())), ".csv": _csv,
    ".safetensors": _safetensors, ".yaml": lambda p: _drop_timing(yaml.safe_load(p.read_text())),
    ".pt": _state,
}


def snapshot(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """``(contents, problems)``: each visible file read in full (timing fields dropped); a file that
    cannot be read whole (a partial file under its final name) is a problem ``"PATH: reason"``."""
    contents: dict[str, Any] = {}
    problems: list[str] = []
    for path in visible_files(folder):
        name = str(path.relative_to(folder))
        reader = READERS.get(path.suffix)
        if reader is None:
            problems.append(f"{name}: unexpected file")
            continue
        try:
            contents[name] = reader(path)
        except Exception as err:  # noqa: BLE001 - any failure to read whole is a partial file
            problems.append(f"{name}: {type(err).__name__}: {str(err)[:120]}")
    return contents, problems


def partial_against(reference: dict[str, Any], contents: dict[str, Any]) -> list[str]:
    """Files present after a kill whose content is not the reference's (outputs are written whole
    and are deterministic, so a visible output differing from the reference is partial). Only
    ``train_state.pt`` (an intermediate checkpoint) and the summaries (rewritten at the end of each
    run, from the records present then) may legitimately differ before the rerun."""
    volatile = ("train_state.pt", "summary.json", "summary.csv")
    return [f"{name}: differs from the reference after the kill" for name, value in contents.items()
            if name not in volatile and name in reference and value != reference[name]]


def differences(reference: dict[str, Any], contents: dict[str, Any]) -> list[str]:
    """Names missing, extra or with content different from the reference."""
    names = sorted(set(reference) | set(contents))
    return [name for name in names if reference.get(name, "<missing>") != contents.get(name, "<missing>")]


def trials(target: str, count: int, seed: int, work: Path, settings: list[str] | None = None, files: int = 3,
           slices: int = 2, kills: int = 1, min_killed: int = 0, after_output: bool = False,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """The reference run and at least ``count`` trials of ``target`` under ``work``, each ``kills``
    SIGKILLed runs in one fresh folder, then a rerun to completion (``settings``: see
    :func:`command`; ``files`` x ``slices``: the simulated batch input). Trials go on past
    ``count`` (up to ``4 * count``) until ``min_killed`` kills have landed on a running process:
    the machine's load changes the run time, so a delay drawn from the reference's window may come
    after the process finished. ``after_output``: each delay is drawn in ``[0, duration - first
    output]`` and counted from the moment the run writes a new output file, so every kill lands
    while outputs are being written (where a partial file could appear). Counts: ``kills`` sent, ``killed`` (the run was still going),
    ``partial`` (checks that found a partial file), ``different`` (trials whose final outputs
    differ from the reference)."""
    data = None
    if target == "batch":
        data = work / "data"
        if not data.is_dir():
            data.mkdir(parents=True)
            simulate(data, files, slices)
    reference_dir = work / f"{target}-reference"
    shutil.rmtree(reference_dir, ignore_errors=True)
    first, duration = timed_reference(command(target, reference_dir, data, settings), reference_dir)
    reference, problems = snapshot(reference_dir)
    if problems:
        raise RuntimeError(f"reference run of {target} left unreadable files: {problems}")
    rng = random.Random(f"{target}-{seed}")
    result: dict[str, Any] = {"target": target, "reference_s": round(duration, 2), "first_output_s": round(first, 2),
                              "files": len(reference), "trials": 0, "kills": 0, "killed": 0, "files_visible_at_kill": 0,
                              "partial": 0, "different": 0, "failures": []}
    trial_dir = work / f"{target}-trial"
    i = 0
    while i < count or (result["killed"] < min_killed and i < 4 * count):
        shutil.rmtree(trial_dir, ignore_errors=True)
        problems: list[str] = []
        notes = []
        for _ in range(kills):  # each kill lands on the folder the previous one left
            delay = rng.uniform(0.0, duration - first) if after_output else rng.uniform(0.8 * first, duration)
            killed = kill_after(command(target, trial_dir, data, settings), delay, trial_dir if after_output else None)
            after_kill, found = snapshot(trial_dir) if trial_dir.exists() else ({}, [])
            found += partial_against(reference, after_kill)
            problems += found
            result["kills"] += 1
            result["killed"] += killed
            result["files_visible_at_kill"] += bool(killed and after_kill)
            result["partial"] += bool(found)
            notes.append(f"kill at {delay:.2f} s{' after an output' if after_output else ''} ({'killed' if killed else 'finished first'}, "
                         f"{len(after_kill)} files visible, {len(found)} partial)")
        run(command(target, trial_dir, data, settings))
        final, more = snapshot(trial_dir)
        diff = differences(reference, final)
        result["trials"] += 1
        result["partial"] += bool(more)
        result["different"] += bool(diff)
        if problems or more or diff:
            result["failures"].append({"trial": i, "kills": notes, "partial": problems + more, "different": diff})
        log(f"{target} trial {i}: {'; '.join(notes)}; after the rerun: partial {len(more)}, different {len(diff)}")
        i += 1
    shutil.rmtree(trial_dir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--targets", nargs="+", default=["batch", "train"], choices=["batch", "train"])
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs per trial before the rerun")
    parser.add_argument("--min-killed", type=int, default=0,
                        help="go on past --trials (up to 4x) until this many kills hit a running process")
    parser.add_argument("--after-output", action="store_true",
                        help="count each kill's delay from the run's next new output file (kills land while writing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    results = [trials(target, args.trials, args.seed, work, kills=args.kills, min_killed=args.min_killed,
                      after_output=args.after_output)
               for target in args.targets]
    for r in results:
        print(f"{r['target']}: {r['trials']} trials, {r['kills']} kills, {r['killed']} of them mid-run "
              f"({r['files_visible_at_kill']} with outputs already written), {r['partial']} with partial files, "
              f"{r['different']} with differences after resume (reference {r['reference_s']} s, first output at {r['first_output_s']} s, {r['files']} files)")
        for failure in r["failures"]:
            print(f"  {r['target']} {failure}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["partial"] == 0 and r["different"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
