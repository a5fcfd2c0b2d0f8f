"""GPU timings of the published-size CT layout, beside the FLOP-bound floor.

    python benchmarks/gpu_figures.py                      # on a GPU: the full set (bf16)
    python benchmarks/gpu_figures.py --precisions fp32,tf32,bf16 --budget-s 180 --json figures.json
    python benchmarks/gpu_figures.py --device cpu --layout small --size 64 --slices 4 --steps 4 --dps-steps 4

The network is guided-diffusion's ``dds_aapm256_ct`` layout (374M parameters, the DDS AAPM
CT checkpoint's ``create_model`` arguments; 1.55 TFLOP per forward at 256²) with random
weights: timing only. The problem is sparse-view parallel-beam CT (8 views) of ``--size``²
slices. Rows, for every precision in ``--precisions`` (default: ``--precision`` alone):

* DDS-``steps`` on one slice, and on a batch of 16 slices;
* DPS-``dps-steps`` on one slice (each step a forward and a backward pass, counted as 3
  forwards);
* 3D DDS (``recon.samplers.DDS3D``, z-TV data step) on a ``--slices``-slice volume,
  ``--chunk`` slices per network call.

Precisions: ``fp32`` (TF32 off for matmuls and cuDNN), ``tf32`` (fp32 with TF32 tensor-core
matmuls and convolutions), ``bf16``/``fp16`` (the network under autocast; the samplers'
arithmetic stays fp32). The TF32 switches are restored afterwards.

With ``--budget-s`` (seconds from the start, set-up included), DDS on one slice runs first for
each precision (the base of the cost model); every other row gets an estimate from the
measurements so far (batch 16: 16x one slice; DPS: ``3 x dps-steps / steps`` x one slice; the
volume: ``slices / 16`` x the batch of 16, or ``slices`` x one slice before that is measured)
and each runs only if its estimate fits the budget left; the others are listed as skipped, with
the estimate. The rows the issue's targets need go first (cheapest first): 16 slices at every
precision and the volume at the last precision listed (bf16 in the device run); then the others,
cheapest first. (On an H100, fp32 DPS-1000 and the fp32 256-slice volume take minutes: they are
skipped under any budget of a device check.)

Each row reports the measured seconds and the floor ``NFE x FLOPs per forward / peak``,
with FLOPs per forward counted by ``torch.utils.flop_counter`` on this layout and size, and
the device's dense peak at each precision (``--peak-tflops``: one number for every precision
or ``fp32=67,tf32=495,bf16=989``; default an H100 SXM's: 67 fp32, 495 tf32, 989 bf16/fp16).
``--layout small`` swaps in a small network so that the script can be checked on a CPU.
Prints a Markdown table (each run named with its precision when there are several); ``--json FILE`` writes every row (and the peak CUDA memory), rewritten
after each row so that an interrupted run keeps what finished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from operators import parallel_beam_ct
from operators.volume import SliceStack
from priors import DiffusionPrior, Normalization, VPSchedule, from_guided_diffusion
from recon.measure import machine_description, timed
from recon.samplers import DDS, DDS3D, DPS

LAYOUTS = {
    "dds_aapm256_ct": {"image_size": 256, "in_channels": 1, "num_channels": 256, "num_res_blocks": 1,
                       "learn_sigma": True, "attention_resolutions": "16", "num_heads": 4, "num_head_channels": 64,
                       "num_heads_upsample": -1, "use_scale_shift_norm": True, "dropout": 0.0,
                       "resblock_updown": True, "use_fp16": False, "use_new_attention_order": False,
                       "class_cond": False},
    "small": {"image_size": 64, "in_channels": 1, "num_channels": 32, "num_res_blocks": 1, "learn_sigma": True,
              "attention_resolutions": "16", "num_head_channels": 32, "use_scale_shift_norm": True,
              "resblock_updown": True},
}
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
H100_SXM_PEAK_TFLOPS = {"fp32": 67.0, "tf32": 494.7, "bf16": 989.0, "fp16": 989.0}  # dense
BATCH = 16


def forward_flops(layout: dict, size: int) -> int:
    """FLOPs of one forward pass on a ``(1, C, size, size)`` input (meta tensors: nothing computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = from_guided_diffusion(dict(layout))
        x = torch.zeros(1, layout["in_channels"], size, size)
        with FlopCounterMode(display=False) as counter:
            net(x, torch.zeros(1))
    return counter.get_total_flops()


def parse_peaks(text: str | None, precisions: list[str]) -> dict[str, float]:
    """``--peak-tflops``: ``None`` (the H100 SXM table), one number (every precision), or ``p=v,...``."""
    peaks = dict(H100_SXM_PEAK_TFLOPS)
    if text:
        if "=" in text:
            for item in text.split(","):
                name, value = item.split("=", 1)
                if name.strip() not in PRECISIONS:
                    raise SystemExit(f"--peak-tflops: unknown precision {name!r}")
                peaks[name.strip()] = float(value)
        else:
            peaks.update({p: float(text) for p in precisions})
    return {p: peaks[p] for p in precisions}


@contextlib.contextmanager
def numerics(prior: DiffusionPrior, precision: str) -> Iterator[None]:
    """Run the prior at ``precision``: autocast dtype and the TF32 switches (restored after)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    prior.precision = "fp32" if precision == "tf32" else precision
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        prior.precision = "fp32"


class Row:
    """One timed configuration: ``run()`` does the work, ``forwards`` its forward-equivalents."""

    def __init__(self, name: str, precision: str, kind: str, forwards: int, run: Callable[[], Any]):
        self.name, self.precision, self.kind, self.forwards, self.run = name, precision, kind, forwards, run


def estimate(row: Row, measured: dict[tuple[str, str], float], args: argparse.Namespace) -> float:
    """Seconds ``row`` should take, from the rows measured so far at its precision."""
    one = measured[(row.precision, "dds1")]
    batch = measured.get((row.precision, "dds16"))
    if row.kind == "dds16":
        return BATCH * one
    if row.kind == "dps":
        return 3 * args.dps_steps / args.steps * one
    if row.kind == "dds3d":
        return (args.slices / BATCH * batch if batch is not None else args.slices * one) * 1.1  # + z-TV steps
    return one


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by benchmarks/device_run.py to validate its figures stage)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="dds_aapm256_ct")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="DDS and 3D DDS steps")
    parser.add_argument("--dps-steps", type=int, default=1000)
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--precisions", default=None,
                        help=f"comma-separated, of {', '.join(PRECISIONS)} (default: --precision)")
    parser.add_argument("--peak-tflops", default=None,
                        help="dense peak: one number for every precision, or fp32=67,tf32=495,bf16=989 "
                             "(default: an H100 SXM's)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for the whole run, set-up included: the rows beyond DDS on one slice run "
                             "cheapest first while their estimates fit (default: no limit, every row)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the peak CUDA memory here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    precisions = [p.strip() for p in (args.precisions or args.precision).split(",") if p.strip()]
    if bad := [p for p in precisions if p not in PRECISIONS]:
        parser.error(f"--precisions: unknown {', '.join(bad)}; expected some of {', '.join(PRECISIONS)}")
    peaks = parse_peaks(args.peak_tflops, precisions)
    device = torch.device(args.device)
    layout = LAYOUTS[args.layout]
    torch.manual_seed(0)
    with torch.device(device):  # initialise the (large) network where it runs
        network = from_guided_diffusion(dict(layout))
    prior = DiffusionPrior(network, VPSchedule.linear(), Normalization(0.5, 0.5),
                           card={"name": f"{args.layout} (random weights)"}).use_channels_last().to(device).eval()
    flops = forward_flops(layout, args.size)
    slice_op = parallel_beam_ct(args.size, views=8).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((BATCH, 1, args.size, args.size), generator=g, device=device)
    y = slice_op(x)
    volume: dict[str, Any] = {}

    def volume_data() -> tuple[SliceStack, torch.Tensor]:
        if not volume:  # built on first use: the 256-slice volume only when its row runs
            op = SliceStack(slice_op, args.slices).to(device)
            volume["op"], volume["y"] = op, op(torch.rand((1, 1, args.slices, args.size, args.size), generator=g,
                                                          device=device))
        return volume["op"], volume["y"]

    def dds3d() -> Any:
        op, y3 = volume_data()
        return DDS3D(prior, steps=args.steps, chunk=args.chunk, clamp=(-1.0, 1.0))(y3, op, generator=g)

    dds = DDS(prior, steps=args.steps, clamp=(-1.0, 1.0))
    warm = DDS(prior, steps=min(args.steps, 3), clamp=(-1.0, 1.0))
    parameters = sum(p.numel() for p in prior.network.parameters())
    header = (f"{machine_description(device)}; {args.layout} ({parameters / 1e6:.0f}M parameters, random weights) at "
              f"{args.size}x{args.size}; {flops / 1e12:.3f} TFLOP per forward; floor at "
              + ", ".join(f"{peaks[p]:g} TFLOP/s ({p})" for p in precisions))
    print(header + "\n")
    print("| run | seconds | forward-equivalents | FLOP-bound floor [s] | measured / floor |")
    print("| --- | --- | --- | --- | --- |", flush=True)
    report: dict[str, Any] = {
        "machine": machine_description(device), "device": str(device), "layout": args.layout,
        "parameters": parameters, "size": args.size, "flop_per_forward": flops, "peak_tflops": peaks,
        "precisions": precisions, "budget_s": args.budget_s, "rows": [], "peak_cuda_gib": None,
    }

    def save() -> None:
        peaks_gib = [r["peak_cuda_gib"] for r in report["rows"] if r.get("peak_cuda_gib") is not None]
        report["peak_cuda_gib"] = max(peaks_gib) if peaks_gib else None
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(report, indent=1))
            os.replace(tmp, args.json)

    def run_row(row: Row, guess: float | None) -> None:
        with numerics(prior, row.precision):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = timed(row.run, device)
        floor = row.forwards * flops / (peaks[row.precision] * 1e12)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        measured[(row.precision, row.kind)] = seconds
        report["rows"].append({"name": row.name, "precision": row.precision, "seconds": seconds,
                               "forward_equivalents": row.forwards, "floor_s": floor, "ratio": seconds / floor,
                               "estimate_s": guess, "peak_cuda_gib": peak})
        print(f"| {label(row)} | {seconds:.2f} | {row.forwards} | {floor:.3f} | {seconds / floor:.1f} |", flush=True)
        save()

    def skip(row: Row, reason: str, guess: float | None) -> None:
        report["rows"].append({"name": row.name, "precision": row.precision, "skipped": reason,
                               "forward_equivalents": row.forwards, "estimate_s": guess})
        print(f"| {label(row)} | skipped: {reason} | {row.forwards} | | |", flush=True)
        save()

    def label(row: Row) -> str:  # the precision in the name only when several are timed
        return f"{row.name}, {row.precision}" if len(precisions) > 1 else row.name

    def left() -> float:
        return float("inf") if args.budget_s is None else args.budget_s - (time.perf_counter() - start)

    measured: dict[tuple[str, str], float] = {}
    rest: list[Row] = []
    for p in precisions:
        base = Row(f"DDS-{args.steps}, 1 slice", p, "dds1", args.steps, lambda: dds(y[:1], slice_op, generator=g))
        rest += [
            Row(f"DDS-{args.steps}, {BATCH} slices", p, "dds16", BATCH * args.steps,
                lambda: dds(y, slice_op, generator=g)),
            Row(f"DPS-{args.dps_steps}, 1 slice", p, "dps", 3 * args.dps_steps,
                lambda: DPS(prior, steps=args.dps_steps, zeta=3.0)(y[:1], slice_op, generator=g)),
            Row(f"3D DDS-{args.steps}, {args.slices} slices", p, "dds3d", args.slices * args.steps, dds3d),
        ]
        if left() <= 0:
            skip(base, "time budget", None)
            continue
        with numerics(prior, p):
            warm(y[:1], slice_op, generator=g)  # warm-up (allocator, kernels) at this precision
        run_row(base, None)
    for row in [r for r in rest if (r.precision, "dds1") not in measured]:
        skip(row, "time budget", None)
    rest = [r for r in rest if (r.precision, "dds1") in measured]
    def first(r: Row) -> bool:  # what the targets need: 16 slices at every precision, the volume in the last
        return r.kind == "dds16" or (r.kind == "dds3d" and r.precision == precisions[-1])

    while rest:  # under a budget the targets' rows cheapest first, then the others cheapest first
        guesses = [estimate(r, measured, args) for r in rest]
        i = 0 if args.budget_s is None else min(range(len(rest)), key=lambda k: (not first(rest[k]), guesses[k]))
        row, guess = rest.pop(i), guesses[i]
        if guess > left():
            skip(row, f"time budget (estimate {guess:.0f} s, {max(left(), 0):.0f} s left)", guess)
        else:
            run_row(row, guess)
    save()
    if report["peak_cuda_gib"] is not None:
        print(f"\npeak CUDA memory: {report['peak_cuda_gib']:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
