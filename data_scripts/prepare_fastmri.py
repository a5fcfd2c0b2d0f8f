"""Prepare a fastMRI multi-coil download for training and evaluation: coil maps and splits.

Usage::

    python data_scripts/prepare_fastmri.py --root knee_multicoil_train --out prepared \
        [--val-fraction 0.1 --test-fraction 0.1 --seed 0 --edge-fraction 0.2]

For every ``*.h5`` under ``--root`` (read only, never modified):

* ``OUT/maps/NAME.h5``: ``sens_maps`` (slices, coils, h, w) complex64, ESPIRiT maps from the
  fully sampled k-space after removing the readout oversampling (the recon size of the
  header, as ``recon batch`` does), and ``image`` (slices, 1, h, w) complex64, the
  coil-combined image ``sum_c conj(S_c) F^-1 k_c`` (its magnitude is the RSS image wherever
  the maps cover the object). Written atomically; existing outputs are kept (resume).
* ``OUT/splits.json``: the files divided into train / val / test by a seeded permutation of
  the volumes (a fastMRI file is one patient's volume, so no patient spans two splits).
* ``OUT/train_images.npy``: (N, 1, h, w) complex64 images of the train split without the
  first and last ``--edge-fraction`` of each volume's slices (mostly noise): the input of
  ``python -m recon train prior=... prior.data.source=npy prior.data.path=OUT/train_images.npy``.
  Volumes of a different ``h x w`` than the first train volume are left out of it (reported).

A file that cannot be read (truncated, missing ``kspace``, wrong rank, NaN) is reported with
its name and reason and skipped; the exit code is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from operators import ifft2c
from recon.data.mri_sources import espirit_batch, regrid
from recon.errors import ReconError
from recon.io.atomic import atomic_write, save_json
from recon.io.fastmri import read_fastmri, write_h5


def coil_maps_and_image(path: Path, calib_width: int) -> tuple[np.ndarray, np.ndarray]:
    """ESPIRiT maps (S, C, h, w) and coil-combined images (S, 1, h, w) of one volume."""
    volume = read_fastmri(path)
    slices, _, rows, cols = volume.kspace_shape
    shape = (min(volume.crop_size[0], rows), min(volume.crop_size[1], cols))
    maps, images = [], []
    for index in range(slices):
        kspace = regrid(torch.from_numpy(volume.kspace(index)), shape)[None]  # (1, C, h, w)
        full = torch.ones(shape)
        s = espirit_batch(kspace, full, calib_width=calib_width)
        maps.append(s[0].numpy())
        images.append((s.conj() * ifft2c(kspace)).sum(dim=1, keepdim=True)[0].numpy())
    return np.stack(maps).astype(np.complex64), np.stack(images).astype(np.complex64)


def split_files(names: list[str], val: float, test: float, seed: int) -> dict[str, list[str]]:
    """A seeded permutation of ``names`` cut into train / val / test (at least 1 train file)."""
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_test = int(round(test * len(order)))
    n_val = int(round(val * len(order)))
    n_val = min(n_val, max(len(order) - n_test - 1, 0))
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of fastMRI multi-coil .h5 files")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--edge-fraction", type=float, default=0.2,
                        help="fraction of slices dropped at each end of a volume for training (default 0.2)")
    parser.add_argument("--calib-width", type=int, default=24, help="ESPIRiT calibration width (default 24)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: not a folder")
    if args.out.resolve() == args.root.resolve():
        parser.error("--out must differ from --root (inputs are never modified)")
    if not (0 <= args.val_fraction < 1 and 0 <= args.test_fraction < 1 and args.val_fraction + args.test_fraction < 1):
        parser.error("--val-fraction and --test-fraction must lie in [0, 1) and sum below 1")
    if not 0 <= args.edge_fraction < 0.5:
        parser.error("--edge-fraction must lie in [0, 0.5)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = sorted(args.root.glob("*.h5"))
    if not files:
        print(f"{args.root}: no .h5 files", file=sys.stderr)
        return 1
    failed: dict[str, str] = {}
    for path in files:
        target = args.out / "maps" / path.name
        if target.is_file():
            continue
        try:
            maps, images = coil_maps_and_image(path, args.calib_width)
        except (ReconError, OSError, ValueError) as err:
            failed[path.name] = str(err).splitlines()[0]
            print(f"{path.name}: FAILED: {failed[path.name]}", file=sys.stderr)
            continue
        write_h5(target, {"sens_maps": maps, "image": images},
                 {"source": str(path), "calib_width": args.calib_width, "method": "espirit"})
        print(f"{path.name}: {maps.shape[0]} slices, {maps.shape[1]} coils, {maps.shape[2]}x{maps.shape[3]}")
    good = [p.name for p in files if p.name not in failed]
    splits = split_files(good, args.val_fraction, args.test_fraction, args.seed)
    save_json(args.out / "splits.json", {"seed": args.seed, "root": str(args.root), "failed": failed, **splits})
    training, shape = [], None
    import h5py

    for name in splits["train"]:
        with h5py.File(args.out / "maps" / name, "r") as f:
            images = f["image"][()]
        edge = int(args.edge_fraction * len(images))
        shape = shape or images.shape[-2:]
        if images.shape[-2:] != shape:
            print(f"{name}: {images.shape[-2:]} differs from {shape}; left out of train_images.npy", file=sys.stderr)
            continue
        training.append(images[edge:len(images) - edge])
    if training:
        stack = np.concatenate(training)
        with atomic_write(args.out / "train_images.npy", "wb") as handle:
            np.save(handle, stack)
        print(f"train_images.npy: {stack.shape}; splits: " + json.dumps({k: len(v) for k, v in splits.items()}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
