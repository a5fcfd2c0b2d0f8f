"""A 512 x 512 DICOM CT slice at 16 views, end to end: ``python -m recon run`` on the file, timed.

    python benchmarks/dicom_slice.py --index 0 1 --pixel-mm 0.45 [--extra samplers=[diffpir_ct]]

Each case writes a held-out anatomical head slice (``recon.data.anatomy``, test split) at
``--size`` pixels of ``--pixel-mm`` as a CT DICOM file (int16 HU, ``PixelSpacing`` set), then runs
``python -m recon run task=sparse_ct data=file data.path=FILE`` in a fresh process and reports
its wall time (start-up included) and every method's scores on the user's grid from its
``metrics.json``. ``--file PATH`` runs a DICOM file of your own instead (scores against itself
as the reference, the simulated-measurement convention of ``data=file``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_case(folder: Path, index: int, size: int, pixel_mm: float) -> Path:
    from recon.data.anatomy import head_slice
    from recon.io.dicom_write import write_dicom_series

    image = head_slice("test", index, size, pixel_mm)
    return write_dicom_series(folder / f"head-{index}", image[None], pixel_size_mm=pixel_mm,
                              slice_thickness_mm=1.0, description=f"recon anatomy test slice {index}")[0]


def run(path: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "recon", "run", "task=sparse_ct", "data=file", f"data.path={path}",
           f"hydra.run.dir={out}", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds, json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, nargs="+", default=[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--pixel-mm", type=float, default=0.45)
    parser.add_argument("--file", type=Path, default=None, help="a DICOM file of your own instead")
    parser.add_argument("--extra", nargs="*", default=[], help="Hydra overrides for the run")
    args = parser.parse_args()
    print("| case | wall s | method | PSNR [dB] | SSIM | method s |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(str(args.file), args.file)] if args.file else [
            (f"head test {i}", write_case(Path(tmp), i, args.size, args.pixel_mm)) for i in args.index]
        for label, path in cases:
            seconds, report = run(path, Path(tmp) / f"run-{len(label)}-{abs(hash(label))}", args.extra)
            for name, metrics in report["methods"].items():
                print(f"| {label} | {seconds:.0f} | {name} | {metrics['psnr']:.2f} | {metrics['ssim']:.3f} | "
                      f"{metrics['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
