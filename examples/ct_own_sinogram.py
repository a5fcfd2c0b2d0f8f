"""Sparse-view CT from your own sinogram and geometry, with the library API (no configs).

    python examples/ct_own_sinogram.py [--sinogram sino.npy --angles angles.npy --pixel-size 0.2]

``sino.npy``: ``(views, detectors)`` line integrals (attenuation x length, e.g. 1/cm x cm);
``angles.npy``: ``(views,)`` projection angles in radians; ``--pixel-size`` in the same length
unit. Without files, a held-out phantom is projected at 16 views as a stand-in.
Prints PSNR against the phantom when there is one.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from operators import ParallelBeamCT, TransmissionNoise
from priors import load_prior
from recon import FBP, psnr, reconstruct


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sinogram", help="(views, detectors) .npy")
    parser.add_argument("--angles", help="(views,) .npy, radians")
    parser.add_argument("--pixel-size", type=float, default=25 / 128, help="pixel side, cm (default 25/128)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--steps", type=int, default=50, help="DDS steps (default 50)")
    parser.add_argument("--out", help="write the DDS reconstruction here (.npy, 1/cm)")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    truth = None
    if args.sinogram:
        y = torch.from_numpy(np.load(args.sinogram)).float()[None, None]
        angles = np.load(args.angles)
        A = ParallelBeamCT(args.size, angles, detector_count=y.shape[-1], pixel_size=args.pixel_size)
    else:
        from recon.data.phantoms import make_phantom

        truth = torch.from_numpy(make_phantom("head", "test", 0, args.size))[None, None]
        A = ParallelBeamCT(args.size, np.linspace(0, math.pi, 16, endpoint=False), pixel_size=args.pixel_size)
        y = TransmissionNoise(1e5)(A(truth), generator=g)
    prior = load_prior("ct-phantom-128")  # fully convolutional: any image size
    x_dds = reconstruct(y, A, prior, "dds", steps=args.steps, clamp=(-1.0, 1.0), generator=g)
    x_fbp = FBP("hann")(y, A)
    scores = {}
    if truth is not None:
        scores = {"fbp": psnr(x_fbp, truth), "dds": psnr(x_dds, truth)}
        print(" ".join(f"{k} {v:.2f} dB" for k, v in scores.items()))
    if args.out:
        np.save(args.out, x_dds[0, 0].numpy())
    return scores


if __name__ == "__main__":
    main()
