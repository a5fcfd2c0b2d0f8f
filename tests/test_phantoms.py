"""Tests for the seeded CT phantoms."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recon.data.phantoms import (
    MU_CORTICAL_BONE,
    MU_LIVER,
    MU_WHITE_MATTER,
    body_phantom,
    head_phantom,
    make_phantom,
    make_phantoms,
)

KINDS = ("ellipses", "head", "body", "mixed")


def _radius(size: int) -> np.ndarray:
    """Distance of each pixel centre from the image centre, normalised units (size, size)."""
    c = -1.0 + (np.arange(size) + 0.5) * 2.0 / size
    return np.hypot(c[None, :], c[:, None])


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_splits_differ(kind: str) -> None:
    a = make_phantom(kind, "train", 3, 64)
    np.testing.assert_array_equal(a, make_phantom(kind, "train", 3, 64))
    assert not np.array_equal(a, make_phantom(kind, "test", 3, 64))
    assert not np.array_equal(a, make_phantom(kind, "train", 4, 64))


@pytest.mark.parametrize("kind", KINDS)
def test_plausible_values_and_air_outside(kind: str) -> None:
    size = 96
    outside = _radius(size) > 0.97
    for index in range(6):
        x = make_phantom(kind, "test", index, size)
        assert x.shape == (size, size) and x.dtype == np.float32
        assert np.isfinite(x).all()
        assert x.min() >= 0.0 and x.max() <= MU_CORTICAL_BONE * 1.05
        assert np.all(x[outside] == 0.0)
        assert x.max() > 0.15  # not empty


def test_head_has_bone_ring_around_brain() -> None:
    size = 256
    for index in range(4):
        x = make_phantom("head", "train", index, size)
        centre = size // 2
        assert 0.185 < x[centre - 8 : centre + 8, centre - 8 : centre + 8].mean() < 0.21
        for angle in np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False):
            t = np.arange(0, size // 2 - 1)
            rows = (centre - t * np.sin(angle)).astype(int)
            cols = (centre + t * np.cos(angle)).astype(int)
            assert x[rows, cols].max() > 0.24, f"no bone along angle {angle:.2f} of head {index}"


def test_body_has_bone_air_and_fat() -> None:
    x = make_phantom("body", "train", 1, 128)
    inside = _radius(128) < 0.4
    assert x.max() > 0.35  # spine / ribs
    assert ((x > 0.15) & (x < 0.18)).sum() > 100  # fat
    assert (x[inside] < 0.1).any()  # gas or lung inside the body


@pytest.mark.parametrize(("phantom", "tissue"), [(head_phantom, MU_WHITE_MATTER), (body_phantom, MU_LIVER)])
def test_low_contrast_lesions(phantom, tissue: float) -> None:
    for seed in range(3):
        with_lesions = phantom(128, np.random.default_rng(seed))
        without = phantom(128, np.random.default_rng(seed), lesions=False)
        diff = np.abs(with_lesions.astype(np.float64) - without)
        assert 0 < np.count_nonzero(diff > 1e-6) < 0.01 * diff.size
        assert 1e-4 < diff.max() <= 0.021 * tissue


def test_make_phantoms_stack_and_mixed_cycle() -> None:
    stack = make_phantoms("mixed", "train", 3, 48, start=2)
    assert stack.shape == (3, 1, 48, 48) and stack.dtype == np.float32
    for offset in range(3):
        np.testing.assert_array_equal(stack[offset, 0], make_phantom("mixed", "train", 2 + offset, 48))
    assert make_phantoms("head", "test", 0, 32).shape == (0, 1, 32, 32)


def test_unknown_kind_or_split() -> None:
    with pytest.raises(ValueError, match="ellipses, head, body, mixed"):
        make_phantom("knee", "train", 0)
    with pytest.raises(ValueError, match="train, test"):
        make_phantom("head", "validation", 0)


def test_generation_speed() -> None:
    for kind in ("ellipses", "head", "body"):
        make_phantom(kind, "train", 0, 128)
        start = time.perf_counter()
        for index in range(5):
            make_phantom(kind, "train", index, 128)
        assert (time.perf_counter() - start) / 5 < 0.15  # target < 50 ms; slack for a busy machine
