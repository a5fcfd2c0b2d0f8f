"""Write complex MRI training images from the MNI152 T1 template (training slices only).

Usage::

    python data_scripts/make_mri_training_set.py --out mri_train.npy [--size 256 --copies 4]
    python -m recon train prior=mri_brain prior.data.path=mri_train.npy

Each template axial slice in ``[--slices-from, --slices-to)`` (default 30-110, far from the
held-out slab 110-145 that ``task=mri_multicoil`` reconstructs) is resampled ``--copies`` times
with a random rotation (+-8 deg), scale (0.9-1.05) and smooth quadratic phase, exactly as
``simulate_fastmri.py`` makes its volumes, onto ``size`` x ``size`` pixels over 233 mm.
Output: ``(N, 1, size, size)`` complex64 ``.npy`` in the image scale of the simulations (the
template's maximum magnitude is 1), written atomically. ``--held-out`` writes the held-out
slab's slices instead, for the model card's quality report only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from make_mri_slab import SLICES as HELD_OUT
from simulate_fastmri import load_template, slab_images, smooth_phase


def training_images(template: np.ndarray, slices: Sequence[int], size: int, copies: int, seed: int) -> np.ndarray:
    """``(len(slices) * copies, 1, size, size)`` complex64 augmented slices."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(slices) * copies, 1, size, size), np.complex64)
    for c in range(copies):
        for i, z in enumerate(slices):
            angle, scale = rng.uniform(-8, 8), rng.uniform(0.9, 1.05)
            magnitude = slab_images(template[[z]], size, angle, scale)[0]
            out[c * len(slices) + i, 0] = magnitude * np.exp(1j * smooth_phase(size, rng))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output .npy file")
    parser.add_argument("--size", type=int, default=256, help="pixels over 233 mm (default 256)")
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per slice (default 4)")
    parser.add_argument("--slices-from", type=int, default=30, help="first template slice (default 30)")
    parser.add_argument("--slices-to", type=int, default=110, help="end of the slices (default 110)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--held-out", action="store_true",
                        help="write the held-out slab's slices instead (evaluation only, never training)")
    args = parser.parse_args(argv)
    slices = HELD_OUT if args.held_out else range(args.slices_from, args.slices_to)
    if not slices or args.slices_from < 0:
        parser.error(f"empty slice range [{args.slices_from}, {args.slices_to})")
    if not args.held_out and args.slices_to > min(HELD_OUT):
        parser.error(f"--slices-to {args.slices_to} reaches the held-out slab (slices {min(HELD_OUT)}+)")
    if args.size < 16 or args.copies < 1:
        parser.error("--size must be >= 16 and --copies >= 1")
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out")
    from recon.io.atomic import atomic_write

    images = training_images(load_template(), slices, args.size, args.copies, args.seed)
    with atomic_write(args.out, "wb") as handle:
        np.save(handle, images)
    print(f"wrote {args.out}: {images.shape} complex64 from {len(slices)} template slices ({slices[0]}-{slices[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
