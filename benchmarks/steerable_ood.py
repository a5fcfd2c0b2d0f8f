"""Steerable Conditional Diffusion where priors meet data they were not trained on: gain and cost.

    OMP_NUM_THREADS=1 python benchmarks/steerable_ood.py --cases ct_on_anatomy ct_on_t1 mri_on_ct --count 1
    python benchmarks/steerable_ood.py --cases ct_on_anatomy --adapt steps=3 lr=2e-3 --steps 100

Cross-distribution pairs (the prior, the data it never saw, the task):

* ``ct_on_anatomy``: the phantom prior ``ct-phantom-128`` (ellipse and procedural phantoms) on held-out anatomical head phantoms
  (``data=anatomy``, 128 x 128 at 1.95 mm, the prior's pixel), sparse-view CT (16 views, 1e5
  photons), DDS (``dds_sparse_ct``) against SCD on it (``scd_ct``).
* ``ct_on_t1``: the same prior and task on an axial slice of nilearn's MNI152 T1 template read
  as attenuation (``mu = 0.3 T1 / max T1`` 1/cm: white matter bright, CSF dark, no skull), a
  ``.npy`` written to ``--workdir`` with its pixel size (233 mm over 128 pixels) given to
  ``data=file``.
* ``mri_on_ct``: the bundled brain MRI prior (MNI152 T1 slices, complex) on CT contrast: an
  anatomical head CT slice (256 x 256 at 0.91 mm, the prior's grid) scaled to maximum 1 (bright
  skull, flat brain) as the magnitude of a zero-phase complex image, multi-coil MRI at 4x
  (``task=mri_multicoil data=mri_npy``), DiffPIR (``diffpir_mri``) against SCD on it (``scd_mri``).
* ``head_on_ellipses``: the reverse of the first: the anatomical head prior ``ct-head-256`` on
  held-out ellipse phantoms (128 x 128 at 1.95 mm, reconstructed on the prior's 1 mm grid).

Every run goes through the application's config path (``Engine(load_config(...))``), plain
and adapted with the same seed (the same measurement and the same sampler noise); seconds are
per image on this machine. Prints Markdown: PSNR / SSIM of both, the gain, the time ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from recon.config import load_config
from recon.engine import Engine

CASES = {
    "ct_on_anatomy": dict(plain="dds_sparse_ct", adapted="scd_ct",
                          overrides=["task=sparse_ct", "prior=ct_phantom", "data=anatomy", "data.size=128",
                                     "data.field_of_view_cm=25"]),
    "ct_on_t1": dict(plain="dds_sparse_ct", adapted="scd_ct", overrides=["task=sparse_ct", "prior=ct_phantom", "data=file"]),
    # the reverse: the anatomical head prior (1 mm) on the ellipse phantoms (128 px of 1.95 mm, run on its 1 mm grid)
    "head_on_ellipses": dict(plain="dds_sparse_ct", adapted="scd_ct",
                             overrides=["task=sparse_ct", "prior=ct_head", "data=phantom", "data.kind=ellipses"]),
    "mri_on_ct": dict(plain="diffpir_mri", adapted="scd_mri",
                      overrides=["task=mri_multicoil", "data=mri_npy", "data.pixel_size_cm=0.091"]),
}


def t1_slices(workdir: Path, count: int, size: int = 128) -> Path:
    """Axial MNI152 T1 slices (template z 70, 80, ...) as attenuation ``0.3 T1 / max`` 1/cm, ``(size, size)``."""
    from nilearn.datasets import load_mni152_template
    from scipy.ndimage import zoom

    volume = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    volume /= volume.max()
    paths = []
    for k in range(count):
        axial = np.rot90(volume[:, :, 70 + 10 * k])  # rows anterior to posterior
        side = max(axial.shape)
        square = np.zeros((side, side), np.float32)
        r, c = (side - axial.shape[0]) // 2, (side - axial.shape[1]) // 2
        square[r : r + axial.shape[0], c : c + axial.shape[1]] = axial
        image = np.clip(zoom(square, size / side, order=1), 0, None) * 0.3
        path = workdir / f"mni_t1_as_ct_{k}.npy"
        np.save(path, image.astype(np.float32))
        paths.append(path)
    return workdir / "mni_t1_as_ct_{k}.npy"


def ct_as_mri(workdir: Path, count: int) -> Path:
    """Anatomical head CT slices (test split) at the MRI prior's grid as complex ``(N, 1, 256, 256)``, max 1."""
    from recon.data.anatomy import head_slices

    images = head_slices("test", count, size=256, pixel_mm=0.91)
    images /= images.reshape(count, -1).max(1)[:, None, None, None]
    path = workdir / "ct_as_mri.npy"
    np.save(path, images.astype(np.complex64))
    return path


def case_overrides(name: str, index: int, workdir: Path) -> list[str]:
    extra = list(CASES[name]["overrides"])
    if name in ("ct_on_anatomy", "head_on_ellipses"):
        extra.append(f"data.index={index}")
    elif name == "ct_on_t1":
        extra += [f"data.path={workdir / f'mni_t1_as_ct_{index}.npy'}", "data.pixel_size_cm=0.182"]
    else:
        extra += [f"data.path={workdir / 'ct_as_mri.npy'}", f"data.index={index}"]
    return extra


def run(overrides: list[str]) -> dict[str, float]:
    outcome = Engine(load_config(overrides)).run()
    (result,) = outcome.results.values()
    return dict(result.metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description="SCD on out-of-distribution data")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--count", type=int, default=1, help="images per case")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps for both (default: the configs')")
    parser.add_argument("--adapt", nargs="*", default=[], help="adapter settings KEY=V (rank, steps, lr, every, ...)")
    parser.add_argument("--workdir", default="/tmp/steerable_ood")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if "ct_on_t1" in args.cases:
        t1_slices(workdir, args.count)
    if "mri_on_ct" in args.cases:
        ct_as_mri(workdir, args.count)

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; adapt {' '.join(args.adapt) or '(config)'}"
          f"{f'; {args.steps} steps' if args.steps else ''}\n")
    print("| case | image | plain PSNR / SSIM | SCD PSNR / SSIM | gain dB | plain s | SCD s | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    gains, ratios = {}, {}
    for name in args.cases:
        case = CASES[name]
        for index in range(args.count):
            base = ["baselines=[]", *case_overrides(name, index, workdir)]
            plain_key = "dds" if case["plain"].startswith("dds") else "diffpir"
            plain = [f"samplers=[{case['plain']}]"] + ([f"samplers.{plain_key}.steps={args.steps}"] if args.steps else [])
            adapted = [f"samplers=[{case['adapted']}]"] + ([f"samplers.scd.steps={args.steps}"] if args.steps else [])
            adapted += [f"samplers.scd.adapt.{kv}" for kv in args.adapt]
            p, a = run(base + plain), run(base + adapted)
            gain, ratio = a["psnr"] - p["psnr"], a["seconds"] / p["seconds"]
            gains.setdefault(name, []).append(gain)
            ratios.setdefault(name, []).append(ratio)
            print(f"| {name} | {index} | {p['psnr']:.2f} / {p['ssim']:.3f} | {a['psnr']:.2f} / {a['ssim']:.3f} | "
                  f"{gain:+.2f} | {p['seconds']:.1f} | {a['seconds']:.1f} | {ratio:.2f} |", flush=True)
    print()
    for name in gains:
        print(f"{name}: mean gain {statistics.mean(gains[name]):+.2f} dB, time ratio {statistics.mean(ratios[name]):.2f}")


if __name__ == "__main__":
    main()
