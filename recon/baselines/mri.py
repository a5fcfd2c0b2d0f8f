"""Classical multi-coil MRI reconstructions: zero-filled, gridding, CG-SENSE and L1-wavelet.

Each is called as ``method(y, physics) -> x`` with ``physics`` an
:class:`operators.MultiCoilMRI` (coil maps normalised to ``sum_c |S_c|^2 = 1``, 0/1 mask) and
``y`` masked k-space ``(B, C, H, W)`` complex, or an :class:`operators.NonCartesianMRI` and its
samples ``(B, C, *trajectory)``; ``x`` is the coil-combined image ``(B, 1, H, W)`` complex in the
units of ``ifft2c`` of Cartesian k-space (fastMRI's image scale). ``nfe`` is 0. Non-Cartesian
data are weighed by the operator's ``density`` (Pruessmann et al. 2001's CG-SENSE; sigpy's
``weights``), so that one set of settings serves both kinds of sampling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from operators import MultiCoilMRI, conjugate_gradient

__all__ = ["CGSense", "Gridding", "L1Wavelet", "ZeroFilled"]


def _weights(physics: object) -> Tensor | None:
    """The density weights of a non-Cartesian operator (None for Cartesian ones or none given)."""
    return getattr(physics, "density", None)


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


class Gridding:
    """The gridding reconstruction ``A^H W y`` of non-Cartesian data (``W``: the operator's density
    weights in Cartesian-cell units, which keep image intensities); for Cartesian data the
    zero-filled image."""

    nfe = 0

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: MultiCoilMRI, **_: object) -> Tensor:
        return physics.gridding(y) if hasattr(physics, "gridding") else physics.adjoint(y)

    def __repr__(self) -> str:
        return "Gridding()"


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

    Non-Cartesian data with density weights ``W`` solve ``(A^H W A + damping I) x = A^H W y``:
    ``W`` preconditions (``||A^H W A|| ~ 1``, so ``damping`` keeps its units) and weighs the
    densely sampled centre down, as in Pruessmann et al. (2001).
    """

    nfe = 0

    def __init__(self, iterations: int = 20, damping: float = 0.01):
        if iterations < 1 or damping < 0:
            raise ValueError("CGSense needs iterations >= 1 and damping >= 0")
        self.iterations = int(iterations)
        self.damping = float(damping)

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: MultiCoilMRI, **_: object) -> Tensor:
        weights = _weights(physics)
        if weights is None:
            rhs, normal = physics.adjoint(y), physics.normal
        else:
            weights = weights.to(y.device)
            rhs = physics.adjoint(weights * y)

            def normal(x: Tensor) -> Tensor:
                return physics.adjoint(weights * physics(x))

        def apply(x: Tensor) -> Tensor:
            return normal(x) + self.damping * x if self.damping else normal(x)
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

    Non-Cartesian data: sigpy's NUFFT at the operator's trajectory (``coord`` in pixels, ``k N /
    2 pi``) with the density as ``weights`` (sigpy applies their square root to the residual;
    ``weighted=False``: the plain least squares, as BART's ``pics``), and ``s = max |A^H W y|``
    (the gridding image; ``max |A^H y|`` unweighted, which grows with the sample count as the
    data term does, so one ``lam`` serves any number of spokes).
    """

    nfe = 0

    def __init__(self, lam: float = 1e-3, iterations: int = 100, wavelet: str = "db4", weighted: bool = True):
        if lam < 0 or iterations < 1:
            raise ValueError("L1Wavelet needs lam >= 0 and iterations >= 1")
        self.lam = float(lam)
        self.iterations = int(iterations)
        self.wavelet = wavelet
        self.weighted = bool(weighted)

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: MultiCoilMRI, **_: object) -> Tensor:
        from sigpy.mri.app import (
            L1WaveletRecon,  # deferred: importing sigpy takes seconds
        )

        batch = y.shape[0]
        height, width = physics.in_shape[-2:]
        maps = physics.sens_maps.expand(batch, -1, -1, -1).cpu().numpy()
        if hasattr(physics, "trajectory"):
            coord = physics.trajectory.double().cpu().numpy() * (np.array([height, width]) / (2 * np.pi))
            weights = _weights(physics) if self.weighted else None
            masks = [None if weights is None else weights.cpu().numpy()] * batch
            reference = Gridding()(y, physics) if weights is not None else physics.adjoint(y)
            scales = reference.abs().flatten(1).amax(dim=1).cpu().numpy()
        else:
            coord = None
            masks = torch.broadcast_to(physics.mask, (batch, 1, height, width))[:, 0].cpu().numpy()
            scales = physics.adjoint(y).abs().flatten(1).amax(dim=1).cpu().numpy()
        data = y.cpu().numpy().astype(np.complex64)
        out = np.empty((batch, 1, height, width), dtype=np.complex64)
        for b in range(batch):
            with numpy_seeded(0):  # sigpy's step size: power iteration from numpy's global generator
                app = L1WaveletRecon(data[b], maps[b], float(self.lam * scales[b]), weights=masks[b], coord=coord,
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
