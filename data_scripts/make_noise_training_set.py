"""Write samples of a structured-noise model, to train a diffusion noise prior on.

Usage::

    python data_scripts/make_noise_training_set.py --pattern stripes --out stripes.npy
    python -m recon train prior=ct_stripes prior.data.path=stripes.npy

``--pattern stripes`` draws CT detector gain errors (:class:`operators.DetectorStripes`, line
integrals) on a ``--shape VIEWS DETECTORS`` sinogram (default 64 x 184, the geometry of
``task=structured_noise``); ``--pattern interference`` draws plane-wave interference
(:class:`operators.Interference`, 1/cm) on ``--shape H W`` images (default 128 x 128). Both
use the models' default settings, the ones the tasks simulate with. The seed (default
1000003) is disjoint from the run seeds, so no training sample is an evaluation draw.
Output: ``(N, 1, *shape)`` float32 ``.npy``, written atomically; an existing file is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PATTERNS = {"stripes": ("DetectorStripes", (64, 184)), "interference": ("Interference", (128, 128))}


def noise_samples(pattern: str, shape: tuple[int, int], count: int, seed: int) -> np.ndarray:
    """``(count, 1, *shape)`` float32 draws of the named pattern with its default settings."""
    import torch

    import operators

    model = getattr(operators, PATTERNS[pattern][0])()
    generator = torch.Generator().manual_seed(seed)
    return model((count, 1, *shape), generator=generator).numpy().astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", choices=sorted(PATTERNS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="output .npy file")
    parser.add_argument("--shape", type=int, nargs=2, default=None, help="sample shape (default: the task's)")
    parser.add_argument("--count", type=int, default=2000, help="number of samples (default 2000)")
    parser.add_argument("--seed", type=int, default=1000003, help="random seed (default 1000003)")
    args = parser.parse_args(argv)
    shape = tuple(args.shape or PATTERNS[args.pattern][1])
    if args.count < 1 or min(shape) < 8:
        parser.error("--count must be >= 1 and each --shape entry >= 8")
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out")
    from recon.io.atomic import save_npy

    samples = noise_samples(args.pattern, shape, args.count, args.seed)
    save_npy(args.out, samples)
    print(f"wrote {args.out}: {samples.shape} float32, {args.pattern} (std {samples.std():.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
