"""Batched sampling against one slice at a time: DDS and DPS on sparse-view CT, same prior.

    python benchmarks/batching.py [--batch 8] [--steps 20] [--repeats 3] [--precision fp32] [--allocator reuse]

Times one held-out slice, then ``--batch`` slices in one call (the network sees them as one
batch), after a warm-up call at each size, best of ``--repeats``, on the device chosen by ``auto``; prints the ratio
``time(batch) / (batch x time(one))`` (below 1: batching pays) as a Markdown table row. A second
table times one network evaluation per slice at batch 1 and ``--batch``, in the contiguous and
the channels-last memory layout (mean of 5 calls after a warm-up). ``--allocator system`` keeps
glibc's defaults on the CPU instead of :func:`recon.allocator.reuse_freed_memory`.
"""

from __future__ import annotations

import argparse

import torch

from operators import TransmissionNoise, parallel_beam_ct
from priors import load_prior
from recon.measure import machine_description, timed
from recon.data.sources import phantom
from recon.allocator import reuse_freed_memory
from recon.build import resolve_device
from recon.samplers import DDS, DPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size; the best counts")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--allocator", default="reuse", choices=["reuse", "system"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu" and args.allocator == "reuse":
        reuse_freed_memory()
    prior = load_prior("ct-phantom-128").to(device)
    prior.precision = args.precision
    truths = [phantom(split="test", index=i) for i in range(args.batch)]
    physics = parallel_beam_ct(128, views=16, pixel_size=truths[0].pixel_size_cm).to(device)
    x = torch.cat([t.image for t in truths]).to(device)
    y = TransmissionNoise(1e5)(physics(x), generator=torch.Generator(device=device).manual_seed(0))
    print(f"{machine_description(device)}; {args.steps} steps, precision {args.precision}, "
          f"allocator {args.allocator}\n")
    print(f"| sampler | one slice [s] | {args.batch} slices in one batch [s] | batch / ({args.batch} x one) |")
    print("| --- | --- | --- | --- |")
    for name, sampler in (("dds", DDS(prior, steps=args.steps, clamp=(-1.0, 1.0))),
                          ("dps", DPS(prior, steps=args.steps, zeta=3.0))):
        run = lambda ys: sampler(ys, physics, generator=torch.Generator(device=device).manual_seed(1))  # noqa: E731
        run(y[:1]), run(y)  # warm-up at both sizes (allocator, astra geometry)
        one = min(timed(lambda: run(y[:1]), device) for _ in range(args.repeats))
        many = min(timed(lambda: run(y), device) for _ in range(args.repeats))
        print(f"| {name}-{args.steps} | {one:.2f} | {many:.2f} | {many / (args.batch * one):.2f} |", flush=True)
    print("\n| batch | contiguous [s/slice] | channels-last [s/slice] |\n| --- | --- | --- |")
    for size in (1, args.batch):
        z = torch.randn((size, 1, 128, 128), generator=torch.Generator(device=device).manual_seed(2), device=device)
        print(f"| {size} | {network_seconds(prior, z, False):.4f} | {network_seconds(prior, z, True):.4f} |", flush=True)


@torch.no_grad()
def network_seconds(prior, z: torch.Tensor, channels_last: bool) -> float:
    """Seconds per slice of ``prior.eps`` on ``z`` in the given memory layout (mean of 5 calls)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    prior.network.to(memory_format=layout)
    prior.channels_last = channels_last
    prior.eps(z, 500)  # warm-up
    seconds = sum(timed(lambda: prior.eps(z, 500), z.device) for _ in range(5)) / 5
    prior.use_channels_last()  # as loaded
    return seconds / z.shape[0]


if __name__ == "__main__":
    main()
