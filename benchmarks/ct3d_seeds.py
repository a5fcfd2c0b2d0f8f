"""The 3D tasks' samplers over several sampler seeds on one measurement per volume.

    python benchmarks/ct3d_seeds.py --task ct3d_limited_angle --volumes 0 1 --seeds 4 \
        --methods independent_2d dds_3d

One sampler draw per volume (``task_benchmark.py``) mixes the methods' differences with the
luck of the draw; here every method runs with generator seeds ``0..seeds-1`` on the same
measurement (the task's own, ``seed`` of the config), as configured by the task. Prints, per
volume and method, PSNR / SSIM / z-PSNR averaged over the seeds (range in brackets), then two
diagnostics of each method's error ``e = x - truth`` over the draws:

* the sampling-variance share of the MSE: the unbiased per-voxel variance of the draws over
  their mean MSE. Averaging the draws away entirely (the sampler's own posterior mean) would
  gain ``-10 log10(1 - share)`` dB, the most any method that only reduces sampling variance
  (as coupling slices partly does) can gain over one draw;
* the correlation of neighbouring slices' errors (cosine, mean over slice pairs and draws): an
  error shared by neighbouring slices is one that coupling along z cannot remove.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from recon.config import load_config
from recon.metrics import evaluate
from recon.engine import Engine


def neighbour_correlation(error: torch.Tensor) -> float:
    """Mean cosine between the errors of neighbouring slices of ``(1, 1, D, H, W)``."""
    flat = error[0, 0].flatten(1)
    return float(torch.nn.functional.cosine_similarity(flat[1:], flat[:-1], dim=1).mean())


def variance_share(draws: list[torch.Tensor], truth: torch.Tensor) -> float:
    """Unbiased per-draw variance over the mean per-draw MSE (0: deterministic sampler)."""
    mean = sum(draws) / len(draws)
    variance = sum(float(((x - mean) ** 2).mean()) for x in draws) / (len(draws) - 1)
    return variance / statistics.mean(float(((x - truth) ** 2).mean()) for x in draws)


def spread(values: list[float], digits: int) -> str:
    """``mean [min, max]`` of ``values``."""
    return f"{statistics.mean(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--volumes", type=int, nargs="+", default=[0, 1], help="data.index of held-out volumes")
    parser.add_argument("--seeds", type=int, default=4, help="sampler seeds per method (at least 2)")
    parser.add_argument("--methods", nargs="+", default=["independent_2d", "dds_3d"])
    parser.add_argument("--overrides", default="", help="config overrides (space separated)")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2")
    print(f"task={args.task} {args.overrides}; {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| volume | method | PSNR [dB] | SSIM | z-PSNR [dB] | variance share | max gain of the mean [dB] "
          "| neighbour error correlation | seconds per draw |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for index in args.volumes:
        cfg = load_config([f"task={args.task}", f"data.index={index}", *args.overrides.split()])
        engine = Engine(cfg)  # the case as `recon run` simulates it; each method then draws per seed
        case, methods, device = engine.case, engine.methods, engine.device
        for name in args.methods:
            start = time.perf_counter()
            draws = [methods[name](case.y, case.physics, generator=torch.Generator(device=device).manual_seed(s))
                     for s in range(args.seeds)]
            seconds = (time.perf_counter() - start) / args.seeds
            metrics = [evaluate(x, case.truth) for x in draws]
            scores = {key: [m[key] for m in metrics] for key in ("psnr", "ssim", "z_psnr")}
            share = variance_share(draws, case.truth)
            correlation = statistics.mean(neighbour_correlation(x - case.truth) for x in draws)
            print(f"| {index} | {name} | {spread(scores['psnr'], 2)} | {spread(scores['ssim'], 4)} | "
                  f"{spread(scores['z_psnr'], 2)} | "
                  f"{share:.3f} | {-10 * math.log10(max(1 - share, 1e-12)):.2f} | {correlation:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
