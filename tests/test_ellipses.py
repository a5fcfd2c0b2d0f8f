"""Tests for ellipse rasterisation and analytic line integrals."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import map_coordinates

from recon.data.ellipses import (
    SHEPP_LOGAN_MODIFIED,
    Ellipse,
    ellipse_line_integrals,
    rasterize_ellipses,
)

ROTATED = [
    Ellipse(1.0, 0.5, 0.2, 0.2, -0.3, 30.0),
    Ellipse(-0.4, 0.15, 0.3, -0.3, 0.25, -50.0),
    Ellipse(0.7, 0.1, 0.1, -0.5, -0.5, 0.0),
]


def _numeric_line_integral(image: np.ndarray, theta: float, s: float) -> float:
    """Midpoint sum of the bilinearly sampled image along one line."""
    n = image.shape[0]
    h = 2.0 / n
    t = np.arange(-1.5, 1.5, h / 2) + h / 4
    x = s * math.cos(theta) - t * math.sin(theta)
    y = s * math.sin(theta) + t * math.cos(theta)
    rows = (1.0 - y) / h - 0.5
    cols = (x + 1.0) / h - 0.5
    values = map_coordinates(image, [rows, cols], order=1, mode="constant", cval=0.0)
    return float(values.sum() * h / 2)


def test_line_integrals_match_numerical_integration() -> None:
    ellipses = SHEPP_LOGAN_MODIFIED + ROTATED
    image = rasterize_ellipses(ellipses, 1024, supersample=2)
    angles = np.array([0.0, 0.4, math.pi / 2, 2.3])
    offsets = np.array([-0.55, -0.1, 0.0, 0.27, 0.6])
    exact = ellipse_line_integrals(ellipses, angles, offsets)
    for i, theta in enumerate(angles):
        for j, s in enumerate(offsets):
            assert abs(exact[i, j] - _numeric_line_integral(image, theta, s)) < 6e-3


def test_projection_mass_and_support() -> None:
    ellipses = ROTATED
    offsets = np.linspace(-1.5, 1.5, 6001)
    sino = ellipse_line_integrals(ellipses, np.array([0.0, 1.0, 2.5]), offsets)
    mass = sum(e.value * math.pi * e.a * e.b for e in ellipses)
    np.testing.assert_allclose(sino.sum(axis=1) * (offsets[1] - offsets[0]), mass, rtol=1e-4)
    assert np.all(sino[:, np.abs(offsets) > 1.2] == 0.0)


def test_single_ellipse_area() -> None:
    e = Ellipse(2.0, 0.4, 0.25, 0.1, -0.2, 35.0)
    size = 256
    image = rasterize_ellipses([e], size)
    area = image.sum() * (2.0 / size) ** 2
    assert abs(area - 2.0 * math.pi * e.a * e.b) < 1e-3
    assert image.max() <= 2.0 + 1e-12 and image.min() >= 0.0


def test_orientation_y_up_x_right() -> None:
    size = 64
    top = rasterize_ellipses([Ellipse(1.0, 0.2, 0.1, 0.0, 0.6, 0.0)], size)
    rows = np.nonzero(top.sum(axis=1))[0]
    assert rows.max() < size // 2
    right = rasterize_ellipses([Ellipse(1.0, 0.1, 0.2, 0.6, 0.0, 0.0)], size)
    cols = np.nonzero(right.sum(axis=0))[0]
    assert cols.min() > size // 2
    # phi = 45 degrees tilts the long axis towards the upper right.
    tilted = rasterize_ellipses([Ellipse(1.0, 0.6, 0.05, 0.0, 0.0, 45.0)], size)
    assert tilted[20, 44] > 0.5 and tilted[20, 19] == 0.0


def test_shepp_logan_values() -> None:
    image = rasterize_ellipses(SHEPP_LOGAN_MODIFIED, 128)
    assert image.shape == (128, 128) and image.dtype == np.float64
    assert abs(image[64, 64] - 0.2) < 1e-9  # brain region
    assert image[0, 0] == 0.0 and image.max() <= 1.0 + 1e-12
