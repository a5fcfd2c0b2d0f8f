"""Choose a sampler's settings on the TRAINING split: a grid of overrides, scored on training cases of a task.

    python benchmarks/tune_samplers.py --task sparse_ct --sampler diffpir --count 2 \\
        --override operator.views=8 --grid samplers.diffpir.noise=0.02,0.05,0.1 samplers.diffpir.zeta=0.3,1.0

Every combination of the ``--grid`` values runs on training cases ``data.split=train
data.index=i seed=i`` for ``i < count`` (the held-out test split is never used here), or on the
training data that ``--train`` names, at ``--indices``; for MRI::

    python data_scripts/make_mri_training_set.py --out mri_train.npy --copies 1 --slices-from 60 --slices-to 100
    python benchmarks/tune_samplers.py --task mri_multicoil --sampler diffpir --override prior=mri_brain \
        --train data=mri_npy data.path=mri_train.npy --indices 15,25 --grid samplers.diffpir.noise=0.01,0.03

Prints a
Markdown row per combination: mean PSNR / SSIM, seconds per case and NFE. The chosen settings
go to the task's sampler config under ``configs/samplers/``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from recon.config import load_config
from recon.engine import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sparse_ct")
    parser.add_argument("--sampler", help="a config of the samplers group, e.g. diffpir")
    parser.add_argument("--baseline", help="tune a baseline instead: a config of the baselines group, e.g. l1_wavelet")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--override", nargs="*", default=[], help="fixed Hydra overrides")
    parser.add_argument("--grid", nargs="*", default=[], help="KEY=V1,V2,... (every combination runs)")
    parser.add_argument("--train", nargs="*", default=["data.split=train"],
                        help="overrides that select the training data (default: data.split=train)")
    parser.add_argument("--indices", default=None, help="training indices, comma-separated (default: 0..count-1)")
    args = parser.parse_args()
    if (args.sampler is None) == (args.baseline is None):
        parser.error("give one of --sampler and --baseline")
    methods = [f"samplers={args.sampler}", "baselines=[]"] if args.sampler else ["samplers=[]", f"baselines=[{args.baseline}]"]
    torch.set_num_threads(1)
    keys = [item.split("=", 1)[0] for item in args.grid]
    values = [item.split("=", 1)[1].split(",") for item in args.grid]
    indices = [int(i) for i in args.indices.split(",")] if args.indices else list(range(args.count))
    print(f"task {args.task}, {args.sampler or args.baseline}, training cases {indices} of {' '.join(args.train)}, "
          f"{' '.join(args.override)}, "
          f"one thread, {time.strftime('%Y-%m-%d')}\n")
    print(f"| {' | '.join(keys) or 'settings'} | PSNR [dB] | SSIM | seconds/case | NFE |")
    print("|" + " --- |" * (max(len(keys), 1) + 4))
    for combo in itertools.product(*values):
        overrides = [f"{k}={v}" for k, v in zip(keys, combo)]
        scores, seconds, nfe = [], [], 0
        for index in indices:
            cfg = load_config([f"task={args.task}", *methods, *args.train,
                               f"data.index={index}", f"seed={index}", "device=cpu", *args.override, *overrides])
            engine = Engine(cfg, progress=False)
            (name, result), = engine.run().results.items()
            scores.append((result.metrics["psnr"], result.metrics["ssim"]))
            seconds.append(result.metrics["seconds"])
            nfe = int(getattr(engine.methods[name], "nfe", 0))
        p, s = (statistics.mean(v[i] for v in scores) for i in (0, 1))
        print(f"| {' | '.join(combo) or '-'} | {p:.2f} | {s:.4f} | {statistics.mean(seconds):.1f} | {nfe} |", flush=True)


if __name__ == "__main__":
    main()
