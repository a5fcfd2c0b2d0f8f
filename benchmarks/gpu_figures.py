"""GPU timings of the published-size CT layout, beside the FLOP-bound floor.

    python benchmarks/gpu_figures.py                      # on a GPU: the full set (bf16)
    python benchmarks/gpu_figures.py --device cpu --layout small --size 64 --slices 4 --steps 4 --dps-steps 4

The network is guided-diffusion's ``dds_aapm256_ct`` layout (374M parameters, the DDS AAPM
CT checkpoint's ``create_model`` arguments) with random weights: timing only. The problem is
sparse-view parallel-beam CT (8 views) of ``--size``² slices. Rows:

* DDS-``steps`` on one slice, and on a batch of 16 slices;
* DPS-``dps-steps`` on one slice (each step a forward and a backward pass, counted as 3
  forwards);
* 3D DDS (``recon.samplers.DDS3D``, z-TV data step) on a ``--slices``-slice volume,
  ``--chunk`` slices per network call.

Each row reports the measured seconds and the floor ``NFE x FLOPs per forward / peak``,
with FLOPs per forward counted by ``torch.utils.flop_counter`` on this layout and size, and
``--peak-tflops`` the device's dense peak at the chosen precision (default 989: an H100 SXM
in bf16). ``--layout small`` swaps in a small network so that the script can be checked on
a CPU. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import torch

from operators import parallel_beam_ct
from operators.volume import SliceStack
from priors import DiffusionPrior, Normalization, VPSchedule, from_guided_diffusion
from recon.bench import machine_description, timed
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


def forward_flops(layout: dict, size: int) -> int:
    """FLOPs of one forward pass on a ``(1, C, size, size)`` input (meta tensors: nothing computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = from_guided_diffusion(dict(layout))
        x = torch.zeros(1, layout["in_channels"], size, size)
        with FlopCounterMode(display=False) as counter:
            net(x, torch.zeros(1))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="dds_aapm256_ct")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="DDS and 3D DDS steps")
    parser.add_argument("--dps-steps", type=int, default=1000)
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense peak at --precision")
    args = parser.parse_args()
    device = torch.device(args.device)
    layout = LAYOUTS[args.layout]
    torch.manual_seed(0)
    prior = DiffusionPrior(from_guided_diffusion(dict(layout)), VPSchedule.linear(), Normalization(0.5, 0.5),
                           card={"name": f"{args.layout} (random weights)"}).use_channels_last().to(device).eval()
    prior.precision = args.precision
    flops = forward_flops(layout, args.size)
    slice_op = parallel_beam_ct(args.size, views=8).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((16, 1, args.size, args.size), generator=g, device=device)
    y = slice_op(x)
    volume_op = SliceStack(slice_op, args.slices).to(device)
    y3 = volume_op(torch.rand((1, 1, args.slices, args.size, args.size), generator=g, device=device))
    dds = DDS(prior, steps=args.steps, clamp=(-1.0, 1.0))
    rows = [
        (f"DDS-{args.steps}, 1 slice", lambda: dds(y[:1], slice_op, generator=g), args.steps),
        (f"DDS-{args.steps}, 16 slices", lambda: dds(y, slice_op, generator=g), 16 * args.steps),
        (f"DPS-{args.dps_steps}, 1 slice", lambda: DPS(prior, steps=args.dps_steps, zeta=3.0)(y[:1], slice_op, generator=g),
         3 * args.dps_steps),
        (f"3D DDS-{args.steps}, {args.slices} slices", lambda: DDS3D(prior, steps=args.steps, chunk=args.chunk,
                                                                    clamp=(-1.0, 1.0))(y3, volume_op, generator=g),
         args.slices * args.steps),
    ]
    dds(y[:1], slice_op, generator=g)  # warm-up (allocator, kernels)
    print(f"{machine_description(device)}; {args.layout} ({sum(p.numel() for p in prior.network.parameters()) / 1e6:.0f}M "
          f"parameters, random weights) at {args.size}x{args.size}, {args.precision}; {flops / 1e12:.3f} TFLOP per "
          f"forward; floor at {args.peak_tflops:g} TFLOP/s\n")
    print("| run | seconds | forward-equivalents | FLOP-bound floor [s] | measured / floor |")
    print("| --- | --- | --- | --- | --- |")
    for name, fn, forwards in rows:
        seconds = timed(fn, device)
        floor = forwards * flops / (args.peak_tflops * 1e12)
        print(f"| {name} | {seconds:.2f} | {forwards} | {floor:.3f} | {seconds / floor:.1f} |", flush=True)
    if device.type == "cuda":
        print(f"\npeak CUDA memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
