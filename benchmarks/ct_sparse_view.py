"""Sparse-view CT benchmark: FBP, TV and the diffusion samplers on held-out phantoms.

    python benchmarks/ct_sparse_view.py --count 20 --views 8 16 --dps-count 4 [--prior PATH]

Every case is built by the application's own config path (``task=sparse_ct`` with
``data.index=i``, ``operator.views=V``), so the numbers are those of
``python -m recon run``. Each method runs one slice at a time; seconds are per slice on
this machine. Methods are labelled with their NFE (``dds-100``). On the first ``--dps-count``
phantoms DPS-1000 and DDS-50 (the paper's setting) also run, for the speed ratio. Prints
Markdown.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from recon.config import load_config
from recon.engine import Engine
from recon.report import Column, format_table
from task_benchmark import COLUMNS


def main() -> None:
    parser = argparse.ArgumentParser(description="sparse-view CT benchmark")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--views", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--dps-count", type=int, default=4)
    parser.add_argument("--sampler", default="dds_sparse_ct", help="the task's sampler config (default dds_sparse_ct)")
    parser.add_argument("--prior", default=None, help="checkpoint path (default: the bundled prior)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    args = parser.parse_args()
    extra = list(args.override) + ([f"prior.checkpoint={args.prior}"] if args.prior else [])

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    for views in args.views:
        results: dict[str, list[dict[str, float]]] = {}
        for index in range(args.count):
            runs = [[f"samplers={args.sampler}"]]  # baselines + the task's sampler
            if index < args.dps_count:  # the speed comparison: DDS-50 (paper default) and DPS-1000
                runs += [["samplers=dds", "baselines=[]"], ["samplers=dps_ct", "baselines=[]"]]
            for run in runs:
                outcome = Engine(load_config(["task=sparse_ct", f"operator.views={views}", f"data.index={index}",
                                                *run, *extra])).run()
                for name, res in outcome.results.items():
                    label = name if res.metrics["nfe"] == 0 else f"{name}-{res.metrics['nfe']}"
                    results.setdefault(label, []).append(res.metrics)
        print(f"\n### {views} views, {args.count} held-out phantoms (DDS-50 and DPS: first {args.dps_count})\n")
        rows = {f"{name} ({len(rows)})": rows for name, rows in results.items()}
        print(format_table(rows, (*COLUMNS[:2], Column("seconds", "seconds/slice", how="mean"), COLUMNS[4]),
                           markdown=True), flush=True)
        dps = [k for k in results if k.startswith("dps-")]
        if dps and "dds-50" in results:
            ratio = statistics.mean(r["seconds"] for r in results[dps[0]]) / statistics.mean(
                r["seconds"] for r in results["dds-50"])
            print(f"\n{dps[0]} / dds-50 time per slice (same {args.dps_count} slices, one run): {ratio:.1f}x")

if __name__ == "__main__":
    main()
