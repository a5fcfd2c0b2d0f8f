"""Two ``recon batch`` runs on one output folder: one writes, the other refuses or runs after it.

The harness makes tiny simulated fastMRI files, runs the batch once alone (the reference), then
``--trials`` times starts two ``python -m recon batch`` processes on one fresh output folder, the
second after a delay drawn uniformly (seeded) in ``[0, --max-offset]`` seconds, and checks:

* outcome: at least one exits 0, the other exits 0 or 2 with the ``another recon batch`` line;
* duplicates: no input file was reconstructed by both (each process's per-file progress bar on
  stderr names the files it reconstructed), and when both exit 0 the later one rewrote none of
  the per-volume outputs (every atomic write makes a new inode, so a rewrite shows);
* corruption: the output holds exactly the reference's files (no partial, no temporary, no lock
  file left), every HDF5 dataset byte-equal to the reference's with equal attributes, and every
  JSON/CSV equal but for timing fields.

    python benchmarks/concurrent_batch.py --trials 20 [--seed 0] [--max-offset 8] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "maps_seconds", "seconds_per_slice", "maps_seconds_per_slice"}
# zero-filled and CG-SENSE: deterministic run to run (sigpy's L1-wavelet is not bitwise)
SETTINGS = ["mask.center_fraction=0.2", "operator.kernel_width=4", "device=cpu", "batch_size=2",
            "~baselines.l1_wavelet"]
REFUSAL = "another recon batch"


def simulate(folder: Path) -> None:
    cmd = [sys.executable, str(ROOT / "data_scripts" / "simulate_fastmri.py"), "--out", str(folder),
           "--num-files=2", "--coils=4", "--slices=3", "--size=48", "--slices-from=60", "--slices-to=80",
           "--slice-step=3"]
    subprocess.run(cmd, check=True, capture_output=True)
    (folder / "manifest.json").unlink(missing_ok=True)


def start(root: Path, output: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "recon", "batch", f"data.root={root}", f"output={output}", *SETTINGS]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stamps(output: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every per-volume output: the HDF5s and their records."""
    return {str(p.relative_to(output)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in output.rglob("*") if p.is_file() and "summary" not in p.name and not p.name.startswith(".")}


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def differences(output: Path, reference: Path) -> list[str]:
    """What in ``output`` is missing, extra or different from ``reference``."""
    files = {str(p.relative_to(output)) for p in output.rglob("*") if p.is_file()}
    expected = {str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file()}
    problems = [f"extra {name}" for name in sorted(files - expected)]
    problems += [f"missing {name}" for name in sorted(expected - files)]
    for name in sorted(files & expected):
        a, b = output / name, reference / name
        try:
            if name.endswith(".h5"):
                with h5py.File(a) as fa, h5py.File(b) as fb:
                    same = set(fa) == set(fb) and all(
                        np.asarray(fa[k][()]).tobytes() == np.asarray(fb[k][()]).tobytes() for k in fb)
                    same = same and {k: str(v) for k, v in fa.attrs.items()} == {k: str(v) for k, v in fb.attrs.items()}
            elif name.endswith(".json"):
                same = _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text()))
            elif name.endswith(".csv"):
                same = _strip(list(csv.DictReader(io.StringIO(a.read_text())))) == \
                    _strip(list(csv.DictReader(io.StringIO(b.read_text()))))
            else:
                same = a.read_bytes() == b.read_bytes()
        except (OSError, ValueError) as err:  # unreadable: corrupted
            same = False
            name = f"{name} ({err})"
        if not same:
            problems.append(f"differs {name}")
    return problems


def trial(root: Path, output: Path, reference: Path, offset: float) -> dict[str, Any]:
    first = start(root, output)
    time.sleep(offset)
    second = start(root, output)
    procs = {"first": first, "second": second}
    order, snapshot = [], None
    while len(order) < 2:
        for name, proc in procs.items():
            if name not in order and proc.poll() is not None:
                order.append(name)
                if len(order) == 1:
                    snapshot = stamps(output) if output.exists() else {}
        time.sleep(0.02)
    codes = {name: proc.returncode for name, proc in procs.items()}
    errs = {name: proc.stderr.read() for name, proc in procs.items()}
    refused = [n for n in procs if codes[n] == 2 and REFUSAL in errs[n]]
    ok = sorted(codes.values()) == [0, 0] or (sorted(codes.values()) == [0, 2] and len(refused) == 1)
    # files each process reconstructed: its per-file progress bar (``NAME.h5: ... slice``) on stderr
    done = {n: {f.name for f in root.glob("*.h5") if f"{f.name}:" in errs[n]} for n in procs}
    duplicate = len(done["first"] & done["second"])
    if codes["first"] == codes["second"] == 0:  # the later one must have rewritten nothing
        later = stamps(output)
        duplicate += sum(1 for k, v in snapshot.items() if later.get(k) != v)
    problems = differences(output, reference)
    return {"offset_s": round(offset, 2), "codes": codes, "refused": refused, "finished_first": order[0],
            "reconstructed": {n: sorted(v) for n, v in done.items()},
            "outcome_ok": ok, "duplicate_rewrites": duplicate, "corrupted_or_missing": problems,
            "stderr_tail": {n: errs[n].strip().splitlines()[-1:] for n in procs if codes[n] != 0}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-offset", type=float, default=8.0, help="seconds; the second start is delayed U(0, this)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="concurrent_batch_"))
    root = work / "in"
    shutil.rmtree(work / "trials", ignore_errors=True)
    if not root.is_dir():
        simulate(root)
    reference = work / "reference"
    if not reference.is_dir():
        tic = time.perf_counter()
        ref = start(root, reference)
        if ref.wait() != 0:
            print(f"reference run failed: {ref.stderr.read().strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        print(f"reference run: {time.perf_counter() - tic:.1f} s")
    rng = random.Random(args.seed)
    results = []
    for index in range(args.trials):
        result = trial(root, work / "trials" / f"{index:03d}", reference, rng.uniform(0, args.max_offset))
        results.append(result)
        print(json.dumps(result), flush=True)
    bad = [r for r in results if not r["outcome_ok"] or r["duplicate_rewrites"] or r["corrupted_or_missing"]]
    refused = sum(1 for r in results if r["refused"])
    both = sum(1 for r in results if set(r["codes"].values()) == {0})
    print(f"trials {len(results)}: one refused {refused}, both ran (one after the other) {both}, "
          f"bad outcome {sum(not r['outcome_ok'] for r in results)}, "
          f"duplicate rewrites {sum(r['duplicate_rewrites'] for r in results)}, "
          f"corrupted or missing outputs {sum(len(r['corrupted_or_missing']) for r in results)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
