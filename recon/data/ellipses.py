"""Ellipse phantoms: rasterisation by pixel-area averaging and exact analytic line integrals.

Coordinates are normalised to the square [-1, 1]^2 with x to the right and y UP. An image of
``size`` pixels has row 0 at the top (y = +1 side) and column 0 at the left (x = -1); pixel
centres lie at -1 + (i + 0.5) * 2 / size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ellipse:
    """One ellipse with an additive value (overlapping ellipses sum).

    ``a`` is the semi-axis along the ellipse's own x axis, which is rotated by ``phi_degrees``
    counter-clockwise from the image x axis; ``b`` is the other semi-axis. (x0, y0) is the
    centre. All lengths are in normalised units.
    """

    value: float
    a: float
    b: float
    x0: float
    y0: float
    phi_degrees: float


# Toft's modified Shepp-Logan head phantom (higher-contrast values than the original).
SHEPP_LOGAN_MODIFIED: list[Ellipse] = [
    Ellipse(1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    Ellipse(-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    Ellipse(-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    Ellipse(-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    Ellipse(0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    Ellipse(0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    Ellipse(0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    Ellipse(0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    Ellipse(0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    Ellipse(0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
]


def ellipse_window(ellipse: Ellipse, n: int) -> tuple[slice, slice, np.ndarray]:
    """Where ``ellipse`` covers the pixel centres of an n x n grid over [-1, 1]^2.

    Returns (rows, cols, inside): slices of the bounding box clipped to the grid and a boolean
    array of shape (len(rows), len(cols)) that is True at pixel centres inside the ellipse.
    """
    h = 2.0 / n
    phi = math.radians(ellipse.phi_degrees)
    c, s = math.cos(phi), math.sin(phi)
    half_x = math.hypot(ellipse.a * c, ellipse.b * s)
    half_y = math.hypot(ellipse.a * s, ellipse.b * c)
    # Column j has x = -1 + (j + 0.5) h; row i has y = 1 - (i + 0.5) h.
    j0 = max(0, math.ceil((ellipse.x0 - half_x + 1.0) / h - 0.5))
    j1 = min(n, math.floor((ellipse.x0 + half_x + 1.0) / h - 0.5) + 1)
    i0 = max(0, math.ceil((1.0 - ellipse.y0 - half_y) / h - 0.5))
    i1 = min(n, math.floor((1.0 - ellipse.y0 + half_y) / h - 0.5) + 1)
    rows, cols = slice(i0, max(i0, i1)), slice(j0, max(j0, j1))
    dx = -1.0 + (np.arange(cols.start, cols.stop) + 0.5) * h - ellipse.x0
    dy = 1.0 - (np.arange(rows.start, rows.stop) + 0.5) * h - ellipse.y0
    u = dx[None, :] * c + dy[:, None] * s
    v = -dx[None, :] * s + dy[:, None] * c
    inside = (u / ellipse.a) ** 2 + (v / ellipse.b) ** 2 <= 1.0
    return rows, cols, inside


def rasterize_ellipses(ellipses: Sequence[Ellipse], size: int, supersample: int = 4) -> np.ndarray:
    """Pixel-area averages of the summed ellipses, float64 (size, size).

    Each pixel is the mean over a supersample x supersample grid of sub-pixel centres.
    """
    if size < 1 or supersample < 1:
        raise ValueError(f"size and supersample must be >= 1, got {size} and {supersample}")
    n = size * supersample
    fine = np.zeros((n, n))
    for ellipse in ellipses:
        rows, cols, inside = ellipse_window(ellipse, n)
        fine[rows, cols] += ellipse.value * inside
    return fine.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def ellipse_line_integrals(
    ellipses: Sequence[Ellipse], angles: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Exact line integrals p(theta, s) of the summed ellipses, shape (len(angles), len(offsets)).

    p(theta, s) = integral of f(s (cos theta, sin theta) + t (-sin theta, cos theta)) dt, with
    ``angles`` theta in radians and ``offsets`` s in normalised units. Each ellipse contributes
    its value times the chord length cut by the line.
    """
    theta = np.asarray(angles, dtype=np.float64).reshape(-1, 1)
    s = np.asarray(offsets, dtype=np.float64).reshape(1, -1)
    out = np.zeros((theta.shape[0], s.shape[1]))
    for e in ellipses:
        # Shift to the ellipse centre and rotate into its own frame.
        s_local = s - (e.x0 * np.cos(theta) + e.y0 * np.sin(theta))
        angle = theta - math.radians(e.phi_degrees)
        r2 = (e.a * np.cos(angle)) ** 2 + (e.b * np.sin(angle)) ** 2  # squared support half-width
        gap = np.clip(r2 - s_local**2, 0.0, None)
        out += e.value * 2.0 * e.a * e.b * np.sqrt(gap) / r2
    return out
