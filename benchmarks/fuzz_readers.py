"""Fuzzing campaign over every reader and the CLI's overrides: counts per reader and outcome.

    python benchmarks/fuzz_readers.py --cases 10000 --seed 0

Cases are spread evenly over the readers (and the mutations of each) and run in a worker process,
one at a time, under a 30 s limit each: a case over the limit is a HANG, a worker that dies
(segfault, abort, out of memory) is a CRASH, any exception other than the project's one-line error
naming the file is a FAIL (the first lines of each are printed). The workers' peak resident memory
is reported.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
LIMIT_S = 30.0


def worker() -> None:
    """Read JSON cases ``[reader, op, seed]`` from stdin, print ``[outcome, detail, peak_rss_kib]`` per case."""
    import resource
    import warnings

    import fuzz_strategies as fs

    warnings.simplefilter("ignore")
    for line in sys.stdin:
        reader, op, seed = json.loads(line)
        with tempfile.TemporaryDirectory() as folder:
            try:
                outcome, detail = (fs.run_cli_case(seed) if reader == "cli"
                                   else fs.run_case(reader, op, seed, Path(folder)))
            except Exception as exc:  # the seed file could not be written: a bug of the fuzzer, counted apart
                outcome, detail = "GENERATOR", f"{type(exc).__name__}: {exc}"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps([outcome, detail[-600:], peak]), flush=True)


def cases(count: int, seed: int) -> list[tuple[str, str, int]]:
    import fuzz_strategies as fs

    rng = random.Random(seed)
    readers = [*fs.READERS, "cli"]
    out = []
    for i in range(count):
        reader = readers[i % len(readers)]
        ops = ("overrides",) if reader == "cli" else fs.READERS[reader][0]
        out.append((reader, ops[(i // len(readers)) % len(ops)], rng.randrange(2**31)))
    return out


def _start() -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)


def campaign(count: int, seed: int) -> int:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: list[str] = []
    peak_kib = 0
    slowest = (0.0, "")
    proc = _start()
    begin = time.perf_counter()
    try:
        for number, (reader, op, case_seed) in enumerate(cases(count, seed), start=1):
            proc.stdin.write(json.dumps([reader, op, case_seed]) + "\n")
            proc.stdin.flush()
            start = time.perf_counter()
            ready, _, _ = select.select([proc.stdout], [], [], LIMIT_S)
            line = proc.stdout.readline() if ready else None
            took = time.perf_counter() - start
            if line:
                outcome, detail, peak = json.loads(line)
                peak_kib = max(peak_kib, peak)
            else:
                outcome, detail = ("HANG" if not ready else "CRASH"), f"after {took:.1f} s"
                proc.kill()
                proc.wait()
                proc = _start()
            slowest = max(slowest, (took, f"{reader}/{op}/{case_seed}"))
            counts[reader][outcome] += 1
            if outcome not in {"ok", "clean"}:
                failures.append(f"{outcome} {reader}/{op}/seed {case_seed}: {detail.splitlines()[-1] if detail else ''}")
            if number % 500 == 0:
                print(f"... {number} cases, {time.perf_counter() - begin:.0f} s", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGINT: report the cases run so far
        print("interrupted: partial counts", flush=True)
    proc.stdin.close()
    proc.wait()
    outcomes = ["ok", "clean", "FAIL", "HANG", "CRASH", "GENERATOR"]
    print(f"{'reader':<10}" + "".join(f"{o:>10}" for o in outcomes) + f"{'total':>10}")
    for reader, counter in counts.items():
        print(f"{reader:<10}" + "".join(f"{counter[o]:>10}" for o in outcomes) + f"{sum(counter.values()):>10}")
    total = collections.Counter()
    for counter in counts.values():
        total.update(counter)
    print(f"{'all':<10}" + "".join(f"{total[o]:>10}" for o in outcomes) + f"{sum(total.values()):>10}")
    print(f"{time.perf_counter() - begin:.0f} s; slowest case {slowest[0]:.1f} s ({slowest[1]}); "
          f"worker peak RSS {peak_kib / 1024:.0f} MiB")
    for line in failures[:40]:
        print(line)
    return 1 if any(total[o] for o in ("FAIL", "HANG", "CRASH")) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    return campaign(args.cases, args.seed)


if __name__ == "__main__":
    sys.exit(main())
