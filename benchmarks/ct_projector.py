"""CT projector throughput and adjoint exactness: the system-matrix backend against astra's projectors.

    python benchmarks/ct_projector.py                          # CPU: 128² and 256², 16 and 90 views
    python benchmarks/ct_projector.py --device cuda --json out.json   # on a GPU (astra CUDA where installed)

For each geometry (parallel and fan beam, ``--sizes``, ``--views``) and batch of ``--batches``
slices: slices per second of a projection plus a backprojection (``A`` then ``A^T``, the pair a
CG or DDS step needs), best of ``--repeats`` calls after one warm-up, for

* ``matrix``: ``operators._matrix`` (astra's system matrix applied by torch on ``--device``);
* ``astra``: astra's projectors slice by slice (its CPU projector; on ``--device cuda`` its CUDA
  projector when astra has a CUDA build, else the row is left out).

Also the matrix's build time and memory, and the adjoint error
``max |<A x, y> - <x, A^T y>| / (||A x|| ||y||)`` of each backend with signed random inputs in
float32 (and float64 for the matrix). Prints a Markdown table; ``--json`` writes the rows (after
each geometry, so a run stopped at a time limit keeps what finished), the machine, the device and
what ``astra.use_cuda()`` answered.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from operators import _matrix, adjoint_error, fan_beam_ct, parallel_beam_ct
from recon.measure import machine_description

FACTORIES = {"parallel": parallel_beam_ct, "fan": fan_beam_ct}


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def astra_use_cuda() -> bool | str:
    """``astra.use_cuda()``, or why astra could not answer (missing, or without its CUDA runtime)."""
    from operators._astra import astra

    try:
        return bool(astra.use_cuda())
    except Exception as err:
        return f"{type(err).__name__}: {err}"[:300]


def backends(device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["matrix", "astra"]
    return ["matrix", "astra"] if astra_use_cuda() is True else ["matrix"]


def measure(kind: str, size: int, views: int, batches: list[int], device: torch.device, repeats: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for backend in backends(device):
        op = FACTORIES[kind](size, views, backend=backend)
        build = memory = None
        if backend == "matrix":
            _matrix._CACHE.clear()
            start = time.perf_counter()
            pair = _matrix.system_matrices(op.geometry, device)
            build = time.perf_counter() - start
            memory = sum(m.values().nbytes + m.col_indices().nbytes + m.crow_indices().nbytes for m in pair)
        x = torch.randn((4, *op.in_shape), generator=g).to(device)
        y = torch.randn((4, *op.out_shape), generator=g).to(device)
        errors = {"float32": adjoint_error(op, op.adjoint, x, y)}
        if backend == "matrix":
            errors["float64"] = adjoint_error(op, op.adjoint, x.double(), y.double())
        for batch in batches:
            images = torch.rand((batch, *op.in_shape), generator=g).to(device)
            seconds = best_seconds(lambda: op.adjoint(op(images)), device, repeats)
            rows.append({"kind": kind, "size": size, "views": views, "backend": backend, "batch": batch,
                         "slices_per_second": batch / seconds, "seconds": seconds, "build_seconds": build,
                         "matrix_mib": None if memory is None else memory / 2**20,
                         "adjoint_error": errors})
            print(f"  {kind} {size}² {views} views {backend:6s} batch {batch:3d}: "
                  f"{batch / seconds:8.1f} slices/s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| geometry | backend | slices/s at " + " / ".join(str(b) for b in sorted({r['batch'] for r in rows}))
             + " | matrix build [s] | matrix [MiB] | adjoint error f32 / f64 |",
             "| --- | --- | --- | --- | --- | --- |"]
    keys = sorted({(r["kind"], r["size"], r["views"], r["backend"]) for r in rows},
                  key=lambda k: (k[1], k[0], k[2], k[3] != "matrix"))
    for kind, size, views, backend in keys:
        group = sorted((r for r in rows if (r["kind"], r["size"], r["views"], r["backend"]) == (kind, size, views,
                                                                                                  backend)),
                       key=lambda r: r["batch"])
        first = group[0]
        rates = " / ".join(f"{r['slices_per_second']:.0f}" for r in group)
        build = "" if first["build_seconds"] is None else f"{first['build_seconds']:.2f}"
        mib = "" if first["matrix_mib"] is None else f"{first['matrix_mib']:.0f}"
        err = first["adjoint_error"]
        errors = f"{err['float32']:.1e}" + (f" / {err['float64']:.1e}" if "float64" in err else "")
        lines.append(f"| {kind} {size}², {views} views | {backend} | {rates} | {build} | {mib} | {errors} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--views", default="16,90")
    parser.add_argument("--kinds", default="parallel,fan")
    parser.add_argument("--batches", default="1,16,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the rows here (after each geometry)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    device = torch.device(args.device)
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    rows = []
    report = {"machine": machine_description(device), "device": str(device), "astra_use_cuda": astra_use_cuda(),
              "rows": rows}
    for size in ints(args.sizes):
        for kind in args.kinds.split(","):
            for views in ints(args.views):
                rows += measure(kind, size, views, ints(args.batches), device, args.repeats)
                if args.json:  # rewritten after each geometry: a run stopped at a time limit keeps what finished
                    with open(args.json, "w") as f:
                        json.dump(report, f, indent=1)
    print(f"\n{report['machine']}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
