"""Write train/test sets of anatomical head CT slices (attenuation, 1/cm) as ``.npy`` files.

Usage::

    python data_scripts/make_anatomy_phantoms.py --out data/head256 --size 256 --pixel-mm 1 --train 1500 --test 16

``--plane coronal`` writes coronal planes (rows inferior to superior, as ``volume[:, r, :]`` of
the isotropic volumes) for a perpendicular prior; ``--levels-mm LO HI`` sets the axial levels.
Writes ``OUT/train.npy`` and ``OUT/test.npy`` (N, 1, H, W) float32 and ``OUT/meta.json``; the
test slices come from held-out deformation seeds and axial levels (:mod:`recon.data.anatomy`).
Files are written atomically; existing files are kept unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recon.data.anatomy import GENERATOR_VERSION, LEVELS_MM, TEST_BANDS_MM, head_slices
from recon.io.atomic import save_json, save_npy

OUTPUTS = ("train.npy", "test.npy", "meta.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--pixel-mm", type=float, default=1.0, help="pixel size in mm (default 1)")
    parser.add_argument("--train", type=int, default=1500, help="number of training slices (default 1500)")
    parser.add_argument("--test", type=int, default=16, help="number of test slices (default 16)")
    parser.add_argument("--plane", choices=("axial", "coronal"), default="axial", help="slice plane (default axial)")
    parser.add_argument("--levels-mm", type=float, nargs=2, default=LEVELS_MM, metavar=("LO", "HI"),
                        help=f"axial levels (MNI z, mm) of axial slices (default {LEVELS_MM[0]:g} {LEVELS_MM[1]:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    if args.size < 16 or args.pixel_mm <= 0 or args.train < 0 or args.test < 0:
        parser.error("--size >= 16, --pixel-mm > 0 and non-negative counts are required")
    existing = [name for name in OUTPUTS if (args.out / name).exists()]
    if existing and not args.overwrite:
        print(f"{args.out}: {', '.join(existing)} already exist; pass --overwrite to replace", file=sys.stderr)
        return 1
    for split, count in (("train", args.train), ("test", args.test)):
        save_npy(args.out / f"{split}.npy", head_slices(split, count, args.size, args.pixel_mm, 0, args.plane,
                                                            tuple(args.levels_mm)))
    save_json(args.out / "meta.json", {
        "kind": "anatomy-head", "plane": args.plane, "levels_mm": list(args.levels_mm), "size": args.size, "pixel_mm": args.pixel_mm,
        "counts": {"train": args.train, "test": args.test}, "units": "1/cm",
        "held_out_levels_mm": [list(band) for band in TEST_BANDS_MM],
        "generator": "recon.data.anatomy", "generator_version": GENERATOR_VERSION,
    })
    print(f"wrote {args.train} train and {args.test} test {args.plane} head slices ({args.size}px, {args.pixel_mm} mm) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
