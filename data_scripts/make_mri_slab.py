"""Extract the bundled held-out MRI slab from nilearn's MNI152 T1 template.

Usage::

    python data_scripts/make_mri_slab.py            # writes recon/data/mni152_heldout_slab.npz

The slab holds 8 axial slices of the 1 mm template, indices 110, 115, ..., 145 (index 0 =
MNI z -72 mm, so z = +38 ... +73 mm), in the display orientation of
``data_scripts/simulate_fastmri.py`` (rows anterior to posterior, columns from the patient's
right to left), as uint8 (the template divided by its maximum, times 255), compressed.

These indices are HELD OUT: MRI priors are trained on template slices 30-110
(``simulate_fastmri.py --slices-from 30 --slices-to 110``) and must never see slices >= 110.
``task=mri_multicoil`` reconstructs slices of this slab (``recon.data.mri_sources``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from simulate_fastmri import TEMPLATE, load_template

SLICES = tuple(range(110, 150, 5))  # held-out template axial indices
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "recon" / "data" / "mni152_heldout_slab.npz"


def make_slab(template: np.ndarray) -> np.ndarray:
    """uint8 (8, 233, 197) slices :data:`SLICES` of a display-oriented template in [0, 1]."""
    return np.round(np.clip(template[list(SLICES)], 0, 1) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    from recon.io.atomic import atomic_write

    slab = make_slab(load_template())
    with atomic_write(args.out, "wb") as handle:
        np.savez_compressed(handle, slices=slab, template_index=np.array(SLICES, dtype=np.int16),
                            source=np.array(TEMPLATE), pixel_mm=np.array(1.0))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB): template slices {list(SLICES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
