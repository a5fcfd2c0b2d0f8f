"""Per-step overhead of every sampler beside its network evaluations, at 128 x 128 on this CPU.

    python benchmarks/sampler_overhead.py [--steps 10] [--operator inpainting|ct] [--repeats 3]

Each sampler runs ``--steps`` steps (PnP-DM: iterations), otherwise with its default settings, with the bundled CT prior (``ct-phantom-128``) twice: with
its network, and with the network replaced by a stub that returns zeros at no cost (so the run
times everything but the network: schedule arithmetic, data steps, noise draws, checks). The
overhead is ``stub time / (network time - stub time)``, i.e. the sampler's own work as a
fraction of its network work (forward passes, and backward passes for DPS and PiGDM). The
operator is a 70 % random inpainting mask (cheap: the overhead is the sampler's own) or 16-view
parallel-beam CT (the data steps then cost operator applications). Best of ``--repeats``, one
thread. Prints Markdown.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from operators import Inpainting
from operators.ct import parallel_beam_ct
from priors import load_prior
from recon.samplers import SAMPLERS

class ZeroNet(nn.Module):
    """A network stub: zeros of the real network's output shape, no compute."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.out_channels, *x.shape[2:]) + 0 * x


def timed(sampler, y, physics, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        sampler(y, physics, generator=torch.Generator().manual_seed(0))
        best = min(best, time.perf_counter() - tic)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--operator", choices=["inpainting", "ct"], default="inpainting")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior = load_prior("ct-phantom-128").eval()
    with torch.no_grad():
        out = prior.network(torch.zeros(1, prior.channels, 128, 128), torch.zeros(1)).shape[1]
    stub = copy.deepcopy(prior)  # a shallow copy would share (and replace) the prior's module dict
    stub.network = ZeroNet(out)
    g = torch.Generator().manual_seed(0)
    if args.operator == "inpainting":
        physics = Inpainting((torch.rand(128, 128, generator=g) > 0.7).float())
    else:
        physics = parallel_beam_ct(128, 16, pixel_size=25 / 128)
    y = physics(0.2 * torch.rand(1, 1, 128, 128, generator=g))
    print(f"{args.operator}, 128 x 128, {args.steps} steps, best of {args.repeats}, one thread, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| sampler | NFE | s with network | s with stub | overhead | network s per NFE |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, cls in SAMPLERS.items():
        settings = {"iterations" if name == "pnp_dm" else "steps": args.steps}  # otherwise each sampler's defaults
        make = lambda p, cls=cls, settings=settings: cls(p, **settings)  # noqa: E731
        full, bare = timed(make(prior), y, physics, args.repeats), timed(make(stub), y, physics, args.repeats)
        nfe = make(prior).nfe
        print(f"| {name} | {nfe} | {full:.2f} | {bare:.2f} | {100 * bare / (full - bare):.1f} % | "
              f"{(full - bare) / nfe:.3f} |", flush=True)


if __name__ == "__main__":
    main()
