"""Write train/test sets of seeded CT phantoms (attenuation, 1/cm) as ``.npy`` files.

Usage::

    python data_scripts/make_ct_phantoms.py --out data/ct128 --size 128 --train 2000 --test 100 --kind mixed

writes ``OUT/train.npy`` and ``OUT/test.npy`` (N, 1, H, W) float32 and ``OUT/meta.json``. Files
are written atomically; existing files are kept unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recon.data.phantoms import GENERATOR_VERSION, KINDS, make_phantoms
from recon.io.atomic import save_json, save_npy

OUTPUTS = ("train.npy", "test.npy", "meta.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    parser.add_argument("--train", type=int, default=1000, help="number of training phantoms (default 1000)")
    parser.add_argument("--test", type=int, default=100, help="number of test phantoms (default 100)")
    parser.add_argument("--kind", choices=KINDS, default="mixed", help="phantom family (default mixed)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    if args.size < 16:
        parser.error(f"--size must be >= 16, got {args.size}")
    if args.train < 0 or args.test < 0:
        parser.error("--train and --test must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    existing = [name for name in OUTPUTS if (args.out / name).exists()]
    if existing and not args.overwrite:
        print(f"{args.out}: {', '.join(existing)} already exist; pass --overwrite to replace", file=sys.stderr)
        return 1
    for split, count in (("train", args.train), ("test", args.test)):
        save_npy(args.out / f"{split}.npy", make_phantoms(args.kind, split, count, args.size))
    save_json(args.out / "meta.json", {
        "kind": args.kind,
        "size": args.size,
        "counts": {"train": args.train, "test": args.test},
        "units": "1/cm",
        "generator": "recon.data.phantoms",
        "generator_version": GENERATOR_VERSION,
    })
    print(f"wrote {args.train} train and {args.test} test phantoms ({args.kind}, {args.size}px) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
