"""Tune the classical baselines' defaults on the TRAINING split of the CT phantoms.

    python benchmarks/tune_baselines.py --count 8 --views 8 16 --weights 1e-4 3e-4 1e-3 3e-3 1e-2

For each view count: mean PSNR/SSIM of FBP (ramp, hann) and of TV over a grid of weights,
with the sparse_ct task's geometry and noise (128 px, Poisson 1e5 photons). Prints a
Markdown table; the chosen defaults live in configs/baselines/.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from operators import TransmissionNoise
from operators.ct import parallel_beam_ct
from recon.baselines import FBP, TV
from recon.data.phantoms import field_of_view_cm, make_phantom
from recon.metrics import psnr, ssim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--views", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--weights", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()

    print("| views | method | PSNR [dB] | SSIM |")
    print("| --- | --- | --- | --- |")
    for views in args.views:
        methods = {"fbp ramp": FBP("ramp"), "fbp hann": FBP("hann")}
        methods.update({f"tv weight={w:g}": TV(weight=w, iterations=args.iterations) for w in args.weights})
        scores: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        for index in range(args.count):
            truth = torch.from_numpy(make_phantom("mixed", "train", index, args.size))[None, None]
            physics = parallel_beam_ct(args.size, views, pixel_size=field_of_view_cm("mixed", index) / args.size)
            y = TransmissionNoise(1e5)(physics(truth), torch.Generator().manual_seed(index))
            for name, method in methods.items():
                x = method(y, physics)
                scores[name].append((psnr(x, truth), ssim(x, truth)))
        for name, vals in scores.items():
            p = statistics.mean(v[0] for v in vals)
            s = statistics.mean(v[1] for v in vals)
            print(f"| {views} | {name} | {p:.2f} | {s:.4f} |", flush=True)


if __name__ == "__main__":
    main()
