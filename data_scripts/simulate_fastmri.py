"""Simulate fastMRI-style multi-coil brain volumes from the MNI152 T1 template shipped with nilearn.

Usage::

    python data_scripts/simulate_fastmri.py --out data/sim_train --num-files 40 --seed 0 \\
        --slices-from 30 --slices-to 110
    python data_scripts/simulate_fastmri.py --out data/sim_test --num-files 5 --seed 1 \\
        --slices-from 110 --slices-to 150

Each file ``sim_brain_s{seed}_{i:04d}.h5`` follows the fastMRI multi-coil schema: ``kspace``
complex64 (slices, coils, 2N, N) with the readout (rows) 2x oversampled as in fastMRI brain
(640 x 320 for the default N = 320), ``reconstruction_rss`` float32 (slices, N, N) = the
centre-cropped RSS of the fully sampled, noisy coil images, ``ismrmrd_header`` with
encoded (2N, N, 1) and recon (N, N, 1) matrix sizes, and attributes ``acquisition`` (AXT1),
``max``, ``norm``, ``patient_id``, plus the slab it came from.

Slabs: template axial slices (1 mm, index 0 = MNI z -72 mm, brain tissue up to index ~154) are
taken every ``--slice-step`` mm, a random slab lying wholly inside ``[--slices-from,
--slices-to)``; use disjoint ranges for held-out sets. Each file also gets a random in-plane
rotation (+-8 deg) and scale (0.9-1.05), a smooth random phase (quadratic polynomial), birdcage
coil maps (sum_c |S_c|^2 = 1) and complex Gaussian noise of std ``--noise`` per k-space sample
(the image maximum is 1; the FFT is orthonormal so the image noise has the same std).
``manifest.json`` lists every file's slab and parameters. Files are written atomically.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from operators.coils import birdcage_maps
from operators.mri import fft2c, ifft2c
from recon.io.atomic import save_json
from recon.io.fastmri import center_crop, ismrmrd_header, rss, write_h5

TEMPLATE = "MNI152 T1 1mm (nilearn.datasets.load_mni152_template, resolution=1)"
TEMPLATE_FOV = 233  # mm: the template's anterior-posterior extent, mapped to the image width
TEMPLATE_SLICES = 189  # axial slices of the 1 mm template


def load_template() -> np.ndarray:
    """The template as display-oriented axial slices, float32 (Z, 233, 197), values in [0, 1].

    Slice z is the template's axial index (inferior to superior); rows run anterior to
    posterior, columns from the patient's right to left (radiological view).
    """
    from nilearn.datasets import load_mni152_template  # deferred: optional and slow to import

    ras = np.asarray(nib.as_closest_canonical(load_mni152_template(resolution=1)).dataobj, dtype=np.float32)
    display = ras[::-1, ::-1, :].transpose(2, 1, 0)
    return np.ascontiguousarray(display / display.max())


def slab_images(slab: np.ndarray, size: int, angle_deg: float, scale: float) -> np.ndarray:
    """Rotate, scale and resample (Z, h, w) template slices onto a centred (Z, size, size) grid.

    ``scale = 1`` maps the template's 233 mm onto ``size`` pixels; pixels are 233 / (size scale) mm.
    """
    zoom = scale * size / TEMPLATE_FOV
    if zoom < 1:  # anti-alias before downsampling
        slab = ndimage.gaussian_filter(slab, sigma=(0, 0.5 / zoom, 0.5 / zoom))
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) / zoom
    matrix = np.eye(3)
    matrix[1:, 1:] = rotation
    centre_in = (np.array(slab.shape[1:]) - 1) / 2
    centre_out = np.full(2, (size - 1) / 2)
    offset = np.concatenate([[0.0], centre_in - rotation @ centre_out])
    out = ndimage.affine_transform(slab, matrix, offset, output_shape=(len(slab), size, size), order=1)
    return np.clip(out, 0, None)


def smooth_phase(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random quadratic phase map (size, size), radians: offset U(-pi, pi), other terms N(0, 0.5)."""
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    terms = np.stack([x, y, x * y, x**2, y**2])
    return rng.uniform(-math.pi, math.pi) + np.tensordot(rng.normal(0, 0.5, len(terms)), terms, axes=1)


def simulate_file(template: np.ndarray, maps: torch.Tensor, index: int, args: argparse.Namespace) -> dict:
    """Write one volume; returns its manifest entry."""
    rng = np.random.default_rng([args.seed, index])
    size, span = args.size, (args.slices - 1) * args.slice_step + 1
    first = int(rng.integers(args.slices_from, args.slices_to - span + 1))
    z = first + args.slice_step * np.arange(args.slices)
    angle, scale = float(rng.uniform(-8, 8)), float(rng.uniform(0.9, 1.05))
    magnitude = slab_images(template[z], size, angle, scale)
    image = torch.from_numpy(magnitude * np.exp(1j * smooth_phase(size, rng))).to(torch.complex64)
    coil_images = maps * image[:, None]  # (slices, coils, N, N)
    padded = torch.nn.functional.pad(coil_images, (0, 0, size // 2, size - size // 2))  # readout FOV x2
    kspace = fft2c(padded)
    noise = rng.standard_normal((*kspace.shape, 2), dtype=np.float32) * (args.noise / math.sqrt(2))
    kspace = kspace + torch.view_as_complex(torch.from_numpy(noise))
    target = center_crop(rss(ifft2c(kspace), dim=1), (size, size)).numpy().astype(np.float32)
    pixel_mm = TEMPLATE_FOV / (scale * size)
    fov_mm = (size * pixel_mm, size * pixel_mm, float(args.slice_step))
    name = f"sim_brain_s{args.seed}_{index:04d}.h5"
    slab = {"slices_from": int(z[0]), "slices_to": int(z[-1]) + 1, "slice_step": args.slice_step}
    write_h5(
        args.out / name,
        {
            "kspace": kspace.numpy(),
            "reconstruction_rss": target,
            "ismrmrd_header": np.bytes_(ismrmrd_header((2 * size, size, 1), (size, size, 1), fov_mm)),
        },
        {
            "acquisition": "AXT1",
            "max": float(target.max()),
            "norm": float(np.linalg.norm(target)),
            "patient_id": f"mni152-sim-s{args.seed}-{index:04d}",
            "template": TEMPLATE,
            **slab,
        },
    )
    return {"file": name, **slab, "angle_deg": angle, "scale": scale, "pixel_mm": pixel_mm}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num-files", type=int, required=True, help="number of volumes")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--coils", type=int, default=8, help="coils (default 8)")
    parser.add_argument("--slices", type=int, default=8, help="slices per volume (default 8)")
    parser.add_argument("--size", type=int, default=320, help="recon size N; k-space is 2N x N (default 320)")
    parser.add_argument("--slices-from", type=int, default=30, help="first usable slice (default 30)")
    parser.add_argument("--slices-to", type=int, default=150, help="end of the usable slices (default 150)")
    parser.add_argument("--slice-step", type=int, default=2, help="slice spacing in mm (default 2)")
    parser.add_argument("--noise", type=float, default=0.005, help="k-space noise std (default 0.005)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    if args.num_files < 1 or args.coils < 1 or args.slices < 1 or args.slice_step < 1:
        parser.error("--num-files, --coils, --slices and --slice-step must be >= 1")
    if args.size < 16:
        parser.error(f"--size must be >= 16, got {args.size}")
    if args.noise < 0:
        parser.error("--noise must be >= 0")
    span = (args.slices - 1) * args.slice_step + 1
    if not (0 <= args.slices_from and args.slices_from + span <= min(args.slices_to, TEMPLATE_SLICES)):
        parser.error(f"{args.slices} slices every {args.slice_step} mm need {span} template slices within "
                     f"[--slices-from, --slices-to) = [{args.slices_from}, {args.slices_to}) "
                     f"and [0, {TEMPLATE_SLICES})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [f"sim_brain_s{args.seed}_{i:04d}.h5" for i in range(args.num_files)] + ["manifest.json"]
    existing = [name for name in names if (args.out / name).exists()]
    if existing and not args.overwrite:
        print(f"{args.out}: {existing[0]} and {len(existing) - 1} more exist; pass --overwrite",
              file=sys.stderr)
        return 1
    template = load_template()
    maps = birdcage_maps(args.coils, (args.size, args.size))
    files = [simulate_file(template, maps, i, args) for i in range(args.num_files)]
    save_json(args.out / "manifest.json", {
        "template": TEMPLATE,
        "seed": args.seed,
        "coils": args.coils,
        "size": args.size,
        "kspace_shape": [args.slices, args.coils, 2 * args.size, args.size],
        "noise_std": args.noise,
        "slice_range": [args.slices_from, args.slices_to],
        "files": files,
    })
    print(f"wrote {len(files)} volumes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
