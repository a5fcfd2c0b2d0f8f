"""Time NonCartesianMRI's forward plus adjoint (8 coils, 256^2, golden-angle radial) against sigpy's and torchkbnufft's NUFFTs.

    OMP_NUM_THREADS=2 python benchmarks/nufft_speed.py [--spokes 64] [--size 256] [--coils 8] [--repeats 20]

One row per NUFFT: the median wall time of ``A^H (A x)`` for one complex64 image through
``coils`` coil maps (forward and adjoint together), and its accuracy: the relative error of
``A x`` against FINUFFT at eps 1e-9 in double precision. sigpy and torchkbnufft rows appear when
those packages are installed (sigpy is a dependency of recon; torchkbnufft is not).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch

from operators import NonCartesianMRI, birdcage_maps, golden_angle_radial


def median_ms(step: Callable[[], object], repeats: int) -> float:
    step()  # plans, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spokes", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    n = args.size
    traj, maps = golden_angle_radial(args.spokes, 2 * n), birdcage_maps(args.coils, (n, n))
    x = torch.randn(1, 1, n, n, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    exact = NonCartesianMRI(maps, traj, eps=1e-9)(x.to(torch.complex128))
    print(f"{args.coils} coils, {n}^2, {args.spokes} spokes x {2 * n} samples, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| NUFFT | eps | forward + adjoint [ms] | relative error of A x |")
    print("| --- | --- | --- | --- |")
    for eps in (1e-4, 1e-5, 1e-6):
        op = NonCartesianMRI(maps, traj, eps=eps)
        error = float((op(x) - exact).norm() / exact.norm())
        print(f"| FINUFFT (recon) | {eps:g} | {median_ms(lambda: op.adjoint(op(x)), args.repeats):.1f} | {error:.1e} |")
    try:
        import sigpy.mri
    except ImportError:
        sigpy = None
    if sigpy is not None:
        coord = traj.double().numpy() * n / (2 * np.pi)
        sense = sigpy.mri.linop.Sense(maps.numpy(), coord=coord)
        image = x[0, 0].numpy()
        error = float(np.linalg.norm(sense * image - exact[0].numpy()) / exact.norm())
        print(f"| sigpy | (width 4, oversampling 1.25) | {median_ms(lambda: sense.H * (sense * image), args.repeats):.1f} "
              f"| {error:.1e} |")
    try:
        import torchkbnufft as tkbn
    except ImportError:
        tkbn = None
    if tkbn is not None:
        ktraj = traj.reshape(-1, 2).T.contiguous()
        forward, adjoint = tkbn.KbNufft(im_size=(n, n)), tkbn.KbNufftAdjoint(im_size=(n, n))
        smaps = maps[None]
        k = forward(x, ktraj, smaps=smaps, norm="ortho")
        # its norm="ortho" divides by the size of its 2x oversampled grid: a factor 2 below ours
        error = float((2 * k.reshape(exact.shape) - exact).norm() / exact.norm())
        def round_trip() -> torch.Tensor:
            return adjoint(forward(x, ktraj, smaps=smaps, norm="ortho"), ktraj, smaps=smaps, norm="ortho")
        print(f"| torchkbnufft | (table interpolation) | {median_ms(round_trip, args.repeats):.1f} | {error:.1e} |")


if __name__ == "__main__":
    main()
