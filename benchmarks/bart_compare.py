"""BART's ``pics`` (l1-wavelet) against recon's MRI baselines on the same radial k-space.

    OMP_NUM_THREADS=1 python benchmarks/bart_compare.py --spokes 32 64 --train-count 2 --count 4 \\
        [--lams 0.00003 0.0001 0.0003 0.001 0.003] [--samplers dds_mri] [--out FILE.md]

What it measures: for each spoke count, ``task=mri_radial`` cases (256 x 256, 8 birdcage coils,
golden-angle radial with twofold readout oversampling, complex noise 0.005) are simulated by
recon's own engine (:func:`recon.engine.simulate`, one generator seeded with ``seed`` exactly as
:class:`recon.engine.Engine` does, so the k-space equals that of ``python -m recon run``). BART
reconstructs the same k-space with ``bart pics -e -S -R W:3:0:LAM -i ITER -t traj`` (FISTA,
l1-wavelet over image dims 0 and 1, step size from the largest eigenvalue, ``ITER`` = the
iterations of recon's ``l1_wavelet``) with the simulation's true coil maps; recon runs its
``gridding``, ``cg_sense`` and ``l1_wavelet`` baselines (and ``--samplers``) through
:func:`recon.engine.run_methods`. Every image is scored by :func:`recon.metrics.evaluate`, the
engine's scoring (magnitude PSNR / SSIM, data range = max |truth|; SSIM (object) averages the
SSIM map inside the object only, since noise on the zero background dominates whole-image SSIM).
LAM is chosen per spoke count by mean PSNR on training slices (``data=mri_npy``, template slices
75, 85, ... of ``make_mri_training_set.py --copies 1 --slices-from 60 --slices-to 100``); the
table reports held-out slices ``data=mri_slab data.index=i seed=i``. BART's seconds are the
wall clock of the ``pics`` process (reading its inputs included); recon's are the engine's.

Layout and scale: arrays go through :mod:`recon.io.cfl` (k-space ``(1, samples, spokes, C)``,
trajectory ``(3, samples, spokes)`` in pixels, maps ``(H, W, 1, C)``). ``pics`` scales the data
by an estimate from k-space before reconstructing (so LAM is relative to the image scale) and
``-S`` undoes it; BART 0.8.00's gridding NUFFT (used by ``pics`` and by ``bart nufft`` without
``-s``) is normalised like recon's (``bart nufft`` / recon's NUFFT = 1.0014 on a 64 x 64 case;
only the exact DFT ``nufft -s`` is sqrt(H W) larger). So no factor is applied. Measured: with
LAM = 1e-5 on noiseless data the least-squares factor between pics' image and the truth is
1.0001 (256 x 256, 64 spokes) and 1.0005 (64 x 64, 16 spokes; tests/test_bart_compare.py).
``-e`` is needed: with pics' default step size the iteration diverged (an image ~7e4 times too
large). pics minimises the unweighted residual (no density weights, unlike recon's baselines);
its random wavelet shifts are seeded, so repeated runs give identical images.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon.build import build_methods
from recon.config import load_config
from recon.engine import Case, run_methods, simulate
from recon.io.atomic import atomic_write
from recon.io.cfl import (kspace_to_bart_noncart, read_cfl, to_bart_coils, trajectory_to_bart,
                          write_cfl)
from recon.measure import machine_description
from recon.metrics import evaluate

REPO = Path(__file__).resolve().parents[1]
MISSING = "bart not found: install it (Debian: apt-get install bart); skipping"
# Training images (indices into the --train-file stack, template slice = 60 + index), in order of use.
TRAIN_INDICES = (15, 25, 5, 35, 10, 30, 20, 0)
SCORES = (("psnr", 2), ("ssim", 4), ("ssim_object", 4))  # recon.metrics.evaluate's keys, decimals
DEFAULT_LAMS = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)  # 1e-2, 3e-2 lost 4-17 dB on the training slices


@dataclass
class Simulated:
    """A configured case as the engine draws it: config, case, and the generator after the draw."""

    cfg: object
    case: Case
    generator: torch.Generator


def make_case(overrides: list[str]) -> Simulated:
    """``task=mri_radial`` on the CPU with ``overrides``, simulated as :class:`recon.engine.Engine`
    does (one generator seeded with ``cfg.seed``; the same generator then drives the methods)."""
    cfg = load_config(["task=mri_radial", "device=cpu", "samplers=[]", *overrides])
    device = torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    return Simulated(cfg, simulate(cfg, device, generator), generator)


def write_bart_inputs(case: Case, folder: Path) -> None:
    """``folder/kspace``, ``folder/traj`` and ``folder/maps`` (BART layouts) of batch-1 ``case``."""
    shape = tuple(case.truth.shape[-2:])
    write_cfl(folder / "kspace", kspace_to_bart_noncart(case.y[0]))
    write_cfl(folder / "traj", trajectory_to_bart(case.physics.trajectory, shape))
    write_cfl(folder / "maps", to_bart_coils(case.physics.sens_maps[0]))


def bart_pics(folder: Path, lam: float, iterations: int, name: str) -> tuple[torch.Tensor, float]:
    """``(image (1, 1, H, W) complex64 in recon's units, wall seconds)`` of ``bart pics`` on the
    inputs :func:`write_bart_inputs` wrote to ``folder``; the output goes to ``folder/name``."""
    command = ["bart", "pics", "-e", "-S", "-R", f"W:3:0:{lam:g}", "-i", str(iterations),
               "-t", str(folder / "traj"), str(folder / "kspace"), str(folder / "maps"), str(folder / name)]
    start = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    image = np.ascontiguousarray(read_cfl(folder / name))
    return torch.from_numpy(image)[None, None], seconds


def bart_scores(sim: Simulated, lams: list[float], iterations: int, folder: Path) -> dict[float, dict[str, float]]:
    """``{lam: metrics + seconds}`` of ``pics`` at each ``lam`` on ``sim``'s k-space (scored as the engine scores)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_bart_inputs(sim.case, folder)
    out = {}
    for i, lam in enumerate(lams):
        image, seconds = bart_pics(folder, lam, iterations, f"out{i}")
        out[lam] = {**evaluate(image, sim.case.truth), "seconds": seconds}
    return out


def version() -> str:
    done = subprocess.run(["bart", "version"], check=False, capture_output=True, text=True)
    return (done.stdout or done.stderr).strip()


def average(rows: list[dict[str, float]], key: str) -> float:
    return statistics.mean(row[key] for row in rows)


def mean_sd(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def ensure_train_file(path: Path | None, scratch: Path) -> Path:
    """``path``, written by ``make_mri_training_set.py`` if it does not exist (in ``scratch`` without one)."""
    path = path or scratch / "mri_train.npy"
    if not path.exists():
        script = REPO / "data_scripts" / "make_mri_training_set.py"
        subprocess.run([sys.executable, str(script), "--out", str(path), "--copies", "1",
                        "--slices-from", "60", "--slices-to", "100"], check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spokes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--train-count", type=int, default=2, help=f"training slices (indices {TRAIN_INDICES})")
    parser.add_argument("--count", type=int, default=4, help="held-out slices data.index=0..count-1 (at most 8)")
    parser.add_argument("--lams", type=float, nargs="+", default=list(DEFAULT_LAMS), help="pics l1-wavelet weights")
    parser.add_argument("--iterations", type=int, default=None, help="pics iterations (default: recon's l1_wavelet's)")
    parser.add_argument("--samplers", nargs="*", default=[], help="recon samplers to add, e.g. dds_mri")
    parser.add_argument("--train-file", type=Path, default=None, help="training .npy (made if missing)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here (a new file)")
    args = parser.parse_args(argv)
    if shutil.which("bart") is None:
        print(MISSING)
        return 0
    if not 1 <= args.train_count <= len(TRAIN_INDICES) or not 1 <= args.count <= 8:
        parser.error(f"--train-count must be 1-{len(TRAIN_INDICES)} and --count 1-8")
    if args.out is not None and args.out.exists():
        parser.error(f"{args.out} exists; choose another --out")
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="bart_compare_") as tmp:
        scratch = Path(tmp)
        train_file = ensure_train_file(args.train_file, scratch)
        sampler_override = [f"samplers=[{','.join(args.samplers)}]"] if args.samplers else []
        methods_cfg = load_config(["task=mri_radial", "device=cpu", "samplers=[]", *sampler_override])
        iterations = args.iterations or int(methods_cfg.baselines.l1_wavelet.iterations)
        methods = build_methods(methods_cfg, torch.device("cpu"), progress=False)
        train = TRAIN_INDICES[: args.train_count]
        command = ["python", "benchmarks/bart_compare.py", *(sys.argv[1:] if argv is None else argv)]
        emit(f"`{' '.join(command)}`, {time.strftime('%Y-%m-%d')}, BART {version()}, "
             f"{machine_description(torch.device('cpu'))}\n")
        emit(f"`bart pics -e -S -R W:3:0:LAM -i {iterations}` on recon's k-space (true coil maps); "
             f"LAM chosen by mean PSNR on training slices {list(train)} of {train_file.name} "
             f"(template slices {[60 + i for i in train]}); held-out data=mri_slab data.index=0..{args.count - 1}, "
             f"seed = index.\n")
        for spokes in args.spokes:
            grid: dict[float, list[dict[str, float]]] = {lam: [] for lam in args.lams}
            for index in train:
                sim = make_case([f"operator.trajectory.spokes={spokes}", "data=mri_npy", f"data.path={train_file}",
                                 f"data.index={index}", f"seed={index}"])
                for lam, scores in bart_scores(sim, args.lams, iterations, scratch / f"train{spokes}_{index}").items():
                    grid[lam].append(scores)
            emit(f"### {spokes} spokes: training grid (BART pics)\n")
            emit("| LAM | PSNR [dB] | SSIM | SSIM (object) | seconds/slice |")
            emit("| --- | --- | --- | --- | --- |")
            for lam, rows in grid.items():
                emit(f"| {lam:g} | {average(rows, 'psnr'):.2f} | {average(rows, 'ssim'):.4f} | "
                     f"{average(rows, 'ssim_object'):.4f} | {average(rows, 'seconds'):.1f} |")
            best = max(grid, key=lambda lam: average(grid[lam], "psnr"))
            held: dict[str, list[dict[str, float]]] = {}
            for index in range(args.count):
                sim = make_case([f"operator.trajectory.spokes={spokes}", f"data.index={index}", f"seed={index}"])
                bart = bart_scores(sim, [best], iterations, scratch / f"test{spokes}_{index}")[best]
                held.setdefault(f"BART pics (LAM {best:g})", []).append(bart)
                results = run_methods(methods, sim.case.y, sim.case.physics, sim.case.truth, sim.generator)
                for name, result in results.items():
                    held.setdefault(f"recon {name}", []).append(result.metrics)
            emit(f"\n### {spokes} spokes: held-out slices 0-{args.count - 1}\n")
            emit("| method | PSNR [dB] | SSIM | SSIM (object) | seconds/slice |")
            emit("| --- | --- | --- | --- | --- |")
            for name, rows in held.items():
                columns = [mean_sd([r[key] for r in rows], digits) for key, digits in SCORES]
                emit(f"| {name} | {' | '.join(columns)} | {average(rows, 'seconds'):.2f} |")
            emit()
    if args.out is not None:
        with atomic_write(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
