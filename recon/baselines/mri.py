"""Classical multi-coil MRI reconstructions: zero-filled, CG-SENSE and L1-wavelet.

Each is called as ``method(y, physics) -> x`` with ``physics`` an
:class:`operators.MultiCoilMRI` (coil maps normalised to ``sum_c |S_c|^2 = 1``, 0/1 mask),
``y`` masked k-space ``(B, C, H, W)`` complex and ``x`` the coil-combined image ``(B, 1, H, W)``
complex in the units of ``ifft2c`` of ``y`` (fastMRI's image scale). ``nfe`` is 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from operators import MultiCoilMRI, conjugate_gradient

__all__ = ["CGSense", "L1Wavelet", "ZeroFilled"]


class ZeroFilled:
    """The adjoint ``A^H y = sum_c conj(S_c) F^H (M y_c)``: SENSE coil combination of the
    zero-filled coil images.

    With normalised maps this is the image itself for fully sampled noiseless data, and its
    magnitude is then the root-sum-of-squares (RSS) image. Under undersampling it is the
    RSS-style zero-filled reconstruction up to the map normalisation: by Cauchy-Schwarz
    ``|A^H y| <= RSS(F^H y)`` pixel-wise, with equality where the aliased coil images are
    proportional to the maps. Unsampled k-space is not rescaled (no density compensation).
    """

    nfe = 0

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: MultiCoilMRI, **_: object) -> Tensor:
        return physics.adjoint(y)

    def __repr__(self) -> str:
        return "ZeroFilled()"


class CGSense:
    """CG-SENSE: ``iterations`` conjugate-gradient steps on ``(A^H A + damping I) x = A^H y``
    from ``x = 0`` (torch; runs on the device of ``y``; batched, per-sample step sizes).

    Args:
        iterations: CG iterations; with noisy data the early stop is the regulariser.
        damping: Tikhonov weight in units of ``||A||^2`` (= 1 for normalised maps and a 0/1
            mask), so it is independent of the data scale. 0 gives plain CG-SENSE, which
            equals sigpy's ``SenseRecon(lamda=0, max_iter=iterations)``.

    Defaults: the best mean PSNR of a grid on training slices (template axial slices 55 and
    85, disjoint from the held-out slab; 8 birdcage coils, 4x and 8x equispaced, k-space noise
    0.005; README). With these maps plain CG-SENSE is ill-conditioned: noise grows after ~8
    iterations, while with ``damping = 0.01`` 20 iterations reach the converged solution.
    """

    nfe = 0

    def __init__(self, iterations: int = 20, damping: float = 0.01):
        if iterations < 1 or damping < 0:
            raise ValueError("CGSense needs iterations >= 1 and damping >= 0")
        self.iterations = int(iterations)
        self.damping = float(damping)

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: MultiCoilMRI, **_: object) -> Tensor:
        rhs = physics.adjoint(y)
        if self.damping == 0:
            apply = physics.normal
        else:
            def apply(x: Tensor) -> Tensor:
                return physics.normal(x) + self.damping * x
        return conjugate_gradient(apply, rhs, iterations=self.iterations)

    def __repr__(self) -> str:
        return f"CGSense(iterations={self.iterations}, damping={self.damping:g})"


class L1Wavelet:
    """L1-wavelet compressed sensing, ``sigpy.mri.app.L1WaveletRecon`` (FISTA, Daubechies-4):

        min_x  0.5 ||M F S x - y||^2 + lam * s * ||W x||_1

    ``s = max |A^H y|`` per slice, so ``lam`` is dimensionless: scaling ``y`` scales the
    result by the same factor, and one value serves simulated data (image max ~1) and raw
    fastMRI k-space (~1e-4) alike. Runs on the CPU in numpy, one slice at a time (tensors
    are moved to and from the device of ``y``).

    Args:
        lam: relative wavelet weight (see above).
        iterations: FISTA iterations.
        wavelet: PyWavelets name.

    Defaults: the best mean PSNR of a grid on training slices (as for :class:`CGSense`); larger
    ``lam`` trades PSNR for SSIM (4e-3: -1 dB at 4x, +0.1 SSIM).
    """

    nfe = 0

    def __init__(self, lam: float = 1e-3, iterations: int = 100, wavelet: str = "db4"):
        if lam < 0 or iterations < 1:
            raise ValueError("L1Wavelet needs lam >= 0 and iterations >= 1")
        self.lam = float(lam)
        self.iterations = int(iterations)
        self.wavelet = wavelet

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: MultiCoilMRI, **_: object) -> Tensor:
        from sigpy.mri.app import (
            L1WaveletRecon,  # deferred: importing sigpy takes seconds
        )

        batch, _, height, width = y.shape
        maps = physics.sens_maps.expand(batch, -1, -1, -1).cpu().numpy()
        masks = torch.broadcast_to(physics.mask, (batch, 1, height, width))[:, 0].cpu().numpy()
        scales = physics.adjoint(y).abs().flatten(1).amax(dim=1).cpu().numpy()
        data = y.cpu().numpy().astype(np.complex64)
        out = np.empty((batch, 1, height, width), dtype=np.complex64)
        for b in range(batch):
            with numpy_seeded(0):  # sigpy's step size: power iteration from numpy's global generator
                app = L1WaveletRecon(data[b], maps[b], float(self.lam * scales[b]), weights=masks[b],
                                     wave_name=self.wavelet, max_iter=self.iterations, show_pbar=False)
                out[b, 0] = app.run()
        return torch.from_numpy(out).to(y.device)

    def __repr__(self) -> str:
        return f"L1Wavelet(lam={self.lam:g}, iterations={self.iterations})"


@contextmanager
def numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for the block, then restore its state, so that sigpy's
    ``MaxEig`` step-size estimate (a power iteration started from ``np.random``) repeats bit for bit."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
