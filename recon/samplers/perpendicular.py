"""Two perpendicular 2D priors on a volume (TPDM-style, Lee et al., ICCV 2023) inside DDS steps.

A 2D prior on axial slices cannot see along z: at a limited-angle wedge every axial slice misses
the same directions, and the error that remains is one that neighbouring slices share, which
total variation along z cannot remove (``benchmarks/RESULTS.md``, the 3D wedge). A second 2D
prior trained on another plane (coronal: ``volume[:, :, :, r, :]``, rows along z) sees exactly
the structure the axial one cannot, so the two alternate: :class:`Perpendicular`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from operators import LinearOperator
from priors import DiffusionPrior

from .common import Callback
from .safety import check_finite, check_measurement
from .volume import DDS3D, eps_by_chunks

__all__ = ["PLANES", "Perpendicular", "eps_in_plane", "warn_if_anisotropic"]

PLANES = {"axial": 2, "coronal": 3, "sagittal": 4}
"""The volume dimension ``(B, C, D, H, W)`` whose index picks a slice of each plane."""
ANISOTROPY = 1.25  # voxel spacings further apart than this ratio get a warning
MIN_ROW_SHARE = 4  # planes with under 1/4 of the rows the perpendicular prior learned hold no anatomy it knows


def eps_in_plane(prior: DiffusionPrior, z: Tensor, t: int, chunk: int, plane: str) -> Tensor:
    """``prior``'s ``eps`` on every slice of ``z`` ``(B, C, D, H, W)`` in ``plane``, ``chunk`` per call.

    Axial slices are ``(H, W)`` images; coronal ones ``z[..., r, :]``, ``(D, W)`` images (rows
    along z as stored, inferior first for :mod:`recon.data.anatomy`); sagittal ones
    ``z[..., c]``, ``(D, H)`` images."""
    dim = PLANES[plane]
    return eps_by_chunks(prior, z.movedim(dim, 2), t, chunk).movedim(2, dim)


def warn_if_anisotropic(spacing_mm: tuple[float, float, float], name: str = "Perpendicular") -> bool:
    """Warn (and return ``True``) when the voxel spacing ``(dz, dy, dx)`` (mm) is far from isotropic:
    a perpendicular plane then shows anatomy stretched or squashed along z, unlike its training planes."""
    low, high = min(spacing_mm), max(spacing_mm)
    if low <= 0 or high / low <= ANISOTROPY:
        return False
    dz, dy, dx = (f"{s:.3g}" for s in spacing_mm)
    warnings.warn(f"{name}: the volume's voxel spacing (z, y, x) = ({dz}, {dy}, {dx}) mm is far from isotropic "
                  f"(ratio {high / low:.2f} > {ANISOTROPY}); the perpendicular prior learned isotropic planes, so "
                  "its planes through this volume are distorted: resample the volume to isotropic voxels first",
                  stacklevel=2)
    return True


class Perpendicular(DDS3D):
    """DDS on volumes whose Tweedie estimate comes from an axial and a perpendicular 2D prior in turn.

    Per step ``t -> t_prev`` (no gradients):

    1. the *turn*: the perpendicular prior's on every ``every``-th step counted back from the
       last (``every = 2`` alternates; the last step is the axial prior's), the axial prior's
       otherwise; with ``combine="average"`` both, their ``eps`` averaged (two network
       evaluations per slice per step);
    2. ``eps`` of every slice in the turn's plane (:func:`eps_in_plane`, ``chunk`` slices per
       call), Tweedie ``z0`` clamped, ``x0 = decode(z0)``;
    3. the data step on the whole volume (:class:`~recon.samplers.volume.ZTVConsistency`: CG
       started at ``x0``; ``lam = 0``, the default, leaves plain CG, as DDS), clamp, support;
    4. DDS's re-noising ``z_prev = sqrt(abar_prev) encode(x) + sqrt(1 - abar_prev) (eta noise
       + sqrt(1 - eta^2) eps)``.

    Against TPDM's reference (``hyn2028/tpdm``, ``controllable_generation.py``): TPDM runs a
    VE-SDE with 2000 predictor-corrector steps; its primary (axial) prior takes the turn unless
    ``i mod K = K - 1`` (integer ``K``, 2 for CS-MRI) or with probability ``1 - 1/K`` (2.7 for
    sparse-view CT), and only primary turns carry its DPS data gradient. Here a turn is a DDS
    step (20 by default), ``every`` is TPDM's integer ``K``, and *every* step fits the data by
    CG: DDS's re-noising carries the data-consistent estimate, so a turn without it would
    re-noise an estimate that ignores the measurement. Settings as :class:`DDS3D`'s
    (``steps``, ``cg_iterations``, ``gamma``, ``eta``, ``clamp``, ``rho``, ``lam``, ``chunk``).
    ``nfe`` is per slice and counts both priors.

    The two priors must share a schedule and a normalisation; the volume needs enough slices
    for the perpendicular planes to hold anatomy (at least a quarter of the rows the
    perpendicular prior learned: 32 for the bundled coronal prior's 128 rows of 1.95 mm) and near-isotropic voxels (``spacing`` when called, else
    :func:`warn_if_anisotropic` from the engine).

    Args:
        prior: the axial 2D prior.
        perpendicular_prior: the 2D prior of ``plane``.
        steps: sampling steps over the respaced schedule.
        plane: ``"coronal"`` (default) or ``"sagittal"``: the plane ``perpendicular_prior`` learned.
        every: a perpendicular turn every ``every`` steps (``>= 2``; 2: alternate).
        combine: ``"alternate"`` (default) or ``"average"``.
        lam: TV-z weight of the data step (0: plain CG; :class:`ZTVConsistency` units).
        **settings: :class:`DDS3D`'s.
    """

    def __init__(self, prior: DiffusionPrior, perpendicular_prior: DiffusionPrior, steps: int = 20, *,
                 plane: str = "coronal", every: int = 2, combine: str = "alternate", lam: float = 0.0,
                 **settings: Any):
        if plane not in ("coronal", "sagittal"):
            raise ValueError(f"plane must be 'coronal' or 'sagittal', got {plane!r}")
        if combine not in ("alternate", "average"):
            raise ValueError(f"combine must be 'alternate' or 'average', got {combine!r}")
        if int(every) < 2:
            raise ValueError(f"every must be >= 2 (a perpendicular turn every `every` steps), got {every}")
        _check_compatible(prior, perpendicular_prior)
        super().__init__(prior, steps, lam=lam, **settings)
        self.perpendicular_prior = perpendicular_prior
        self.plane, self.every, self.combine = plane, int(every), combine

    @property
    def nfe(self) -> int:
        """Network evaluations per slice: one per step, two when averaging both priors."""
        return self.steps * (2 if self.combine == "average" else 1)

    @torch.no_grad()
    def __call__(self, y: Tensor, physics: LinearOperator, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None, x_init: Tensor | None = None,
                 spacing: tuple[float, float, float] | None = None) -> Tensor:
        """Per step: the turn's prior denoises every slice of its plane, CG fits the data, DDS re-noises.
        ``spacing``: the voxel spacing ``(dz, dy, dx)`` (any unit), checked for isotropy."""
        check_measurement(y, type(self).__name__)
        if spacing is not None:
            warn_if_anisotropic(tuple(float(s) for s in spacing), type(self).__name__)
        z, pairs, data_step, support = self._start(y, physics, generator, x_init)
        learned = int(((self.perpendicular_prior.card or {}).get("network") or {}).get("image_size") or 0)
        if z.shape[2] < max(2, learned // MIN_ROW_SHARE):
            raise ValueError(f"Perpendicular: a volume of {z.shape[2]} slices gives {self.plane} planes of "
                             f"{z.shape[2]} rows, the perpendicular prior learned {learned}; it needs at least "
                             f"{max(2, learned // MIN_ROW_SHARE)} (reconstruct the whole volume, e.g. data.depth=null)")
        for i, (t, _, abar, abar_prev) in enumerate(pairs):
            eps = self._turn_eps(z, t, self._turn(i, len(pairs)))
            x0 = self.prior.decode(self._project(self.prior.x0_from_eps(z, t, eps)))
            x = self._fit(x0, abar, data_step, support)
            check_finite(x, type(self).__name__, i + 1, len(pairs), f"set clamp, or lower lam (now {self.lam:g})")
            if abar_prev < 1.0:
                z = self._renoise(z, x, eps, abar, abar_prev, generator)
            if callback is not None:
                callback(i, len(pairs))
        return x

    def _turn(self, i: int, total: int) -> str:
        """Whose turn step ``i`` of ``total`` is: ``axial``, ``perpendicular`` or ``both``."""
        if self.combine == "average":
            return "both"
        return "perpendicular" if (total - 1 - i) % self.every == self.every - 1 else "axial"

    def _turn_eps(self, z: Tensor, t: int, turn: str) -> Tensor:
        axial = None if turn == "perpendicular" else eps_by_chunks(self.prior, z, t, self.chunk)
        other = None if turn == "axial" else eps_in_plane(self.perpendicular_prior, z, t, self.chunk, self.plane)
        if axial is None or other is None:
            return axial if other is None else other
        return 0.5 * (axial + other)


def _check_compatible(prior: DiffusionPrior, other: DiffusionPrior) -> None:
    """Both priors must share the schedule (the same ``t`` means the same noise) and the normalisation."""
    if not isinstance(other, DiffusionPrior):
        raise TypeError(f"perpendicular_prior must be a DiffusionPrior, got {type(other).__name__}")
    a, b = prior.schedule.train_alphas_cumprod, other.schedule.train_alphas_cumprod
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-6, atol=1e-9):
        raise ValueError("the perpendicular prior was trained with another noise schedule than the axial prior")
    na, nb = prior.normalization, other.normalization
    if not (math.isclose(na.scale, nb.scale, rel_tol=1e-6) and math.isclose(na.offset, nb.offset, abs_tol=1e-9)
            and na.complex_channels == nb.complex_channels):
        raise ValueError(f"the perpendicular prior's normalisation ({nb.offset:g} + {nb.scale:g} z) differs from the "
                         f"axial prior's ({na.offset:g} + {na.scale:g} z)")
