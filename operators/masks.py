"""Seeded Cartesian undersampling masks with a fully sampled centre (ACS region).

Masks are float32 0/1 tensors in the centred k-space layout of :mod:`operators.mri` (DC at
index ``n // 2``): 1D masks are ``(W,)`` over columns (phase encodes, fastMRI's convention) and
broadcast over rows; 2D masks are ``(H, W)``. Each function returns ``(mask, acceleration)``
where ``acceleration`` is the realised one, ``mask.numel() / mask.sum()``.

``center_fraction`` defaults to ``0.32 / acceleration`` (fastMRI's pairs 0.08 at 4x, 0.04 at
8x). The ACS block has ``round(n * center_fraction)`` lines per axis, placed as fastMRI does
(starting at ``(n - lines + 1) // 2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MASK_KINDS",
    "SampledMask",
    "equispaced_mask",
    "gaussian1d",
    "gaussian2d",
    "make_mask",
    "poisson_disc2d",
    "random_mask",
]

MASK_KINDS = ("equispaced", "random", "gaussian1d", "gaussian2d", "poisson")
_GAUSS1D_STD = 15.0 / 128  # column std / W, as in Score-MRI and DDS
_GAUSS2D_STD = math.sqrt(1.5 / 128)  # per-axis std / size, as in Score-MRI and DDS


class SampledMask(NamedTuple):
    """A float32 0/1 mask and its realised acceleration (samples in the grid / samples taken)."""

    mask: Tensor
    acceleration: float


def _check(acceleration: float, center_fraction: float | None) -> float:
    if acceleration <= 1:
        raise ValueError(f"acceleration must be > 1, got {acceleration}")
    fraction = 0.32 / acceleration if center_fraction is None else float(center_fraction)
    if not 0 <= fraction < 1:
        raise ValueError(f"center_fraction must be in [0, 1), got {fraction}")
    return fraction


def _center_lines(n: int, fraction: float) -> tuple[int, int]:
    """fastMRI's ACS block along an axis of ``n`` samples: ``(start, count)``."""
    count = round(n * fraction)
    return (n - count + 1) // 2, count


def _done(mask: np.ndarray) -> SampledMask:
    mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
    return SampledMask(mask, mask.numel() / float(mask.sum()))


def equispaced_mask(
    width: int,
    acceleration: float,
    center_fraction: float | None = None,
    seed: int | Sequence[int] = 0,
    offset: int | None = None,
) -> SampledMask:
    """fastMRI's ``EquispacedMaskFractionFunc``: ACS plus columns at a spacing chosen so that
    about ``width / acceleration`` columns are sampled in total, ``(W,)``.

    Outside columns sit at ``round(offset + k * s)`` with
    ``s = acceleration (W - n_acs) / (W - n_acs acceleration)``; ``offset`` is drawn from
    ``RandomState(seed).randint(round(s))`` unless given, reproducing fastMRI's masks for the
    same per-call ``seed`` (an int or a tuple such as fastMRI's ``tuple(map(ord, fname))``).
    """
    fraction = _check(acceleration, center_fraction)
    start, count = _center_lines(width, fraction)
    if count * acceleration >= width:
        raise ValueError(f"the centre ({count} of {width} columns) exceeds 1/{acceleration} of k-space")
    spacing = acceleration * (width - count) / (width - count * acceleration)
    if offset is None:
        offset = int(np.random.RandomState(seed).randint(0, round(spacing)))
    mask = np.zeros(width)
    mask[np.around(np.arange(offset, width - 1, spacing)).astype(int)] = 1
    mask[start : start + count] = 1
    return _done(mask)


def random_mask(
    width: int,
    acceleration: float,
    center_fraction: float | None = None,
    seed: int | Sequence[int] = 0,
) -> SampledMask:
    """fastMRI's ``RandomMaskFunc``: ACS plus each other column independently with probability
    ``(W / acceleration - n_acs) / (W - n_acs)``, so the *expected* count is ``W / acceleration``.

    Draws ``RandomState(seed).uniform(size=W)`` like fastMRI, so equal seeds give equal masks.
    """
    fraction = _check(acceleration, center_fraction)
    start, count = _center_lines(width, fraction)
    prob = (width / acceleration - count) / (width - count)
    mask = (np.random.RandomState(seed).uniform(size=width) < prob).astype(np.float64)
    mask[start : start + count] = 1
    return _done(mask)


def _weighted_pick(mask: np.ndarray, weights: np.ndarray, total: int, seed: int) -> np.ndarray:
    """Add ``total - mask.sum()`` distinct samples where ``mask == 0``, drawn without
    replacement with probability proportional to ``weights``."""
    free = np.flatnonzero(mask.ravel() == 0)
    extra = total - int(mask.sum())
    if extra < 0:
        raise ValueError(f"the centre ({int(mask.sum())} samples) exceeds the {total} samples allowed")
    p = weights.ravel()[free]
    picks = np.random.default_rng(seed).choice(free, size=extra, replace=False, p=p / p.sum())
    out = mask.ravel().copy()
    out[picks] = 1
    return out.reshape(mask.shape)


def gaussian1d(
    width: int, acceleration: float, center_fraction: float | None = None, seed: int = 0
) -> SampledMask:
    """ACS plus columns drawn without replacement from a Gaussian centred on DC
    (std ``15/128 W``, DDS's), ``round(W / acceleration)`` columns in all, ``(W,)``.

    Unlike DDS (which draws with replacement), the realised acceleration is the nominal one up
    to rounding.
    """
    fraction = _check(acceleration, center_fraction)
    start, count = _center_lines(width, fraction)
    mask = np.zeros(width)
    mask[start : start + count] = 1
    k = np.arange(width) - width // 2
    weights = np.exp(-0.5 * (k / (_GAUSS1D_STD * width)) ** 2)
    return _done(_weighted_pick(mask, weights, round(width / acceleration), seed))


def gaussian2d(
    shape: Sequence[int], acceleration: float, center_fraction: float | None = None, seed: int = 0
) -> SampledMask:
    """ACS block plus points drawn without replacement from a 2D Gaussian centred on DC
    (per-axis std ``sqrt(1.5/128) n``, DDS's), ``round(H W / acceleration)`` points, ``(H, W)``."""
    fraction = _check(acceleration, center_fraction)
    height, width = (int(n) for n in shape)
    (r0, rn), (c0, cn) = _center_lines(height, fraction), _center_lines(width, fraction)
    mask = np.zeros((height, width))
    mask[r0 : r0 + rn, c0 : c0 + cn] = 1
    ky = (np.arange(height) - height // 2) / (_GAUSS2D_STD * height)
    kx = (np.arange(width) - width // 2) / (_GAUSS2D_STD * width)
    weights = np.exp(-0.5 * (ky[:, None] ** 2 + kx[None, :] ** 2))
    return _done(_weighted_pick(mask, weights, round(height * width / acceleration), seed))


def poisson_disc2d(
    shape: Sequence[int], acceleration: float, center_fraction: float | None = None, seed: int = 0
) -> SampledMask:
    """Variable-density Poisson-disc mask from ``sigpy.mri.poisson`` with an ACS block of
    ``round(n * center_fraction)`` per axis, ``(H, W)``.

    sigpy searches the density so the realised acceleration is within 0.1 of the nominal one
    (ValueError otherwise; the ACS block, re-placed as fastMRI does, may add a few samples);
    corners outside the inscribed ellipse are never sampled.
    """
    import sigpy.mri  # deferred: importing sigpy takes seconds

    fraction = _check(acceleration, center_fraction)
    height, width = (int(n) for n in shape)
    (r0, rn), (c0, cn) = _center_lines(height, fraction), _center_lines(width, fraction)
    mask = sigpy.mri.poisson((height, width), acceleration, calib=(rn, cn), dtype=np.float32, seed=int(seed))
    mask = mask.real
    mask[r0 : r0 + rn, c0 : c0 + cn] = 1  # sigpy centres odd-sized blocks one line earlier
    return _done(mask)


def make_mask(
    kind: str,
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float | None = None,
    seed: int = 0,
) -> SampledMask:
    """Config factory: a mask of ``kind`` (one of :data:`MASK_KINDS`) for k-space ``shape = (H, W)``.

    1D kinds (equispaced, random, gaussian1d) return ``(W,)``; 2D kinds ``(H, W)``.
    """
    height, width = (int(n) for n in shape)
    if kind == "equispaced":
        return equispaced_mask(width, acceleration, center_fraction, seed)
    if kind == "random":
        return random_mask(width, acceleration, center_fraction, seed)
    if kind == "gaussian1d":
        return gaussian1d(width, acceleration, center_fraction, seed)
    if kind == "gaussian2d":
        return gaussian2d((height, width), acceleration, center_fraction, seed)
    if kind == "poisson":
        return poisson_disc2d((height, width), acceleration, center_fraction, seed)
    raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(MASK_KINDS)}")
