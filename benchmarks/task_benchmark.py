"""Any ``python -m recon run`` task over many phantoms: mean PSNR/SSIM, seconds and NFE.

    python benchmarks/task_benchmark.py --task inpainting --count 10 \
        --case "operator.mask=box operator.missing_fraction=0.25" \
        --runs "samplers=dds_ct" "samplers=dps baselines=[]" "samplers=red_diff baselines=[]"

Each case is built by the application's own config path (``task=T data.index=i`` plus the
case's and the run's overrides), so the numbers are those of ``python -m recon run``.
``--split train`` tunes on training phantoms (``data.split=train``); the default is the
task's own data (held-out test phantoms, or the held-out MRI slab). ``--vary-seed`` draws a
new measurement noise per phantom (``seed=i``); structured-noise tasks add the noise error
``||n_hat - n|| / ||n||`` column, and volume tasks the z-PSNR column (the agreement of
neighbouring slices, :func:`recon.metrics.z_psnr`). Methods are labelled ``name-NFE``
(``dds-100``), followed by the run's overrides when there are several runs. Seconds are per
case on this machine: per slice, or per volume for the 3D tasks.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from recon.config import load_config
from recon.engine import Engine
from recon.report import SCORES, Column, format_table

COLUMNS = (*SCORES[:2], SCORES[3], Column("seconds", "seconds/case", how="mean"), Column("nfe", "NFE", "d", "first"),
           SCORES[4])


def run_case(overrides: list[str]) -> dict[str, dict[str, float]]:
    """Metrics of every method of one configured run (nothing written to disk)."""
    outcome = Engine(load_config(overrides)).run()
    return {name: res.metrics for name, res in outcome.results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--count", type=int, default=10, help="phantoms (data.index 0..count-1)")
    parser.add_argument("--split", default=None, choices=["test", "train"],
                        help="data.split (phantom data; default: the task's, the held-out test split)")
    parser.add_argument("--case", default="", help="overrides shared by every run (space separated)")
    parser.add_argument("--runs", nargs="+", default=[""], help="one override string per run")
    parser.add_argument("--vary-seed", action="store_true",
                        help="seed=i for phantom i (a new noise draw per case; default: the config's seed for all)")
    args = parser.parse_args()
    print(f"task={args.task} {args.case} split={args.split or 'default'}; {platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; {time.strftime('%Y-%m-%d')}\n")
    results: dict[str, list[dict[str, float]]] = {}
    for run in args.runs:
        labels: dict[str, list[dict[str, float]]] = {}
        for index in range(args.count):
            split = [f"data.split={args.split}"] if args.split else []
            seed = [f"seed={index}"] if args.vary_seed else []
            overrides = [f"task={args.task}", f"data.index={index}", *split, *seed, *args.case.split(), *run.split()]
            for name, metrics in run_case(overrides).items():
                labels.setdefault(name if metrics["nfe"] == 0 else f"{name}-{metrics['nfe']}", []).append(metrics)
        for label, rows in labels.items():
            results[f"{label} [{run}]" if run and len(args.runs) > 1 else label] = rows
    print(format_table({f"{name} ({len(rows)})": rows for name, rows in results.items()}, COLUMNS, markdown=True),
          flush=True)

if __name__ == "__main__":
    main()
