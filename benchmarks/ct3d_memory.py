"""Peak memory of the volume samplers against depth and steps (issue 6's memory claim).

    python benchmarks/ct3d_memory.py [--depths 4 8 16 --steps 3 6 --size 128 --chunk 16]

Each (sampler, depth, steps) runs in a fresh process on a training head volume (8 parallel-beam
views); the process's peak resident memory (CPU, ``ru_maxrss``) or ``torch.cuda.max_memory_allocated``
(GPU) is reported, minus that of a process that only loaded the prior and built the data.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from operators import TransmissionNoise
from operators.volume import parallel_beam_ct3d
from priors import load_prior
from recon.data.volumes import phantom_volume
from recon.samplers import DDS3D, SliceCoupled
name, depth, steps, size, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
gt = phantom_volume(split="train", index=0, size=size, depth=depth)
A = parallel_beam_ct3d(size, depth, 8, pixel_size=gt.pixel_size_cm).to(device)
y = TransmissionNoise(1e5)(A(gt.image.to(device)), generator=torch.Generator(device=device).manual_seed(0))
prior = load_prior("ct-phantom-128").to(device)
start = time.perf_counter()
if name != "none":
    sampler = {"dds_3d": DDS3D, "slice_coupled": SliceCoupled}[name](prior, steps=steps, chunk=chunk)
    sampler(y, A, generator=torch.Generator(device=device).manual_seed(0))
seconds = time.perf_counter() - start
peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mib": peak, "seconds": seconds, "device": device.type}))
"""


def measure(name: str, depth: int, steps: int, size: int, chunk: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(depth), str(steps), str(size), str(chunk)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=16)
    args = parser.parse_args()
    print("| sampler | depth | steps | peak memory above baseline [MiB] | seconds | device |")
    print("| --- | --- | --- | --- | --- | --- |")
    for depth in args.depths:
        base = measure("none", depth, 0, args.size, args.chunk)["peak_mib"]
        for name in ("dds_3d", "slice_coupled"):
            for steps in args.steps:
                r = measure(name, depth, steps, args.size, args.chunk)
                print(f"| {name} | {depth} | {steps} | {r['peak_mib'] - base:.0f} | {r['seconds']:.1f} | {r['device']} |",
                      flush=True)


if __name__ == "__main__":
    main()
