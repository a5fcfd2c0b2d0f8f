"""Inpainting: keep the observed pixels; seeded box, random-pixel and free-form stroke masks.

Masks are float32 0/1 tensors, 1 = observed, 0 = missing. The factories take a 2D shape
``(H, W)`` (``random_pixel_mask`` any shape) and an integer seed; equal seeds give equal masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import LinearOperator

__all__ = ["Inpainting", "box_mask", "inpainting", "random_pixel_mask", "stroke_mask"]


class Inpainting(LinearOperator):
    """``y = mask * x``: missing pixels are zeroed, ``y`` keeps the full image shape.

    Keeping the image shape (as deepinv does) makes ``A`` self-adjoint and idempotent
    (``A^H = A``, ``A^H A = A``) and lets one mask serve every batch element.

    Args:
        mask: ``(H, W)``, shared by all channels, or ``(C, H, W)``; 0/1, stored as a float32
            buffer.
        channels: C when ``mask`` is 2D; images are ``(B, C, H, W)``, real or complex.
    """

    def __init__(self, mask: Tensor, channels: int = 1):
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() not in (2, 3) or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask must be a 0/1 tensor of shape (H, W) or (C, H, W), got {tuple(mask.shape)}")
        shape = (channels, *mask.shape) if mask.dim() == 2 else tuple(mask.shape)
        super().__init__(shape, shape)
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask.to(x.real.dtype) * x

    def adjoint(self, y: Tensor) -> Tensor:
        return self.mask.to(y.real.dtype) * y


def box_mask(shape: Sequence[int], fraction: float = 0.25, seed: int = 0,
             box: tuple[int, int] | None = None) -> Tensor:
    """One missing rectangle at a uniformly random position inside an ``(H, W)`` image.

    ``box = (h, w)`` in pixels, or else a square of side ``round(sqrt(fraction * H * W))``
    (capped by the image), so the missing area is ``fraction`` up to rounding.
    """
    height, width = (int(s) for s in shape)
    if box is None:
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
        side = round(math.sqrt(fraction * height * width))
        box = (min(side, height), min(side, width))
    h, w = box
    if not (0 < h <= height and 0 < w <= width):
        raise ValueError(f"box {box} does not fit in an image of shape {(height, width)}")
    rng = np.random.default_rng(seed)
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    mask = torch.ones(height, width)
    mask[top:top + h, left:left + w] = 0
    return mask


def random_pixel_mask(shape: Sequence[int], missing_fraction: float = 0.7, seed: int = 0) -> Tensor:
    """Exactly ``round(missing_fraction * N)`` missing pixels, drawn without replacement."""
    if not 0 <= missing_fraction <= 1:
        raise ValueError(f"missing_fraction must lie in [0, 1], got {missing_fraction}")
    n = math.prod(int(s) for s in shape)
    missing = np.random.default_rng(seed).permutation(n)[: round(missing_fraction * n)]
    mask = torch.ones(n)
    mask[torch.from_numpy(missing)] = 0
    return mask.reshape(tuple(shape))


def stroke_mask(shape: Sequence[int], missing_fraction: float = 0.25, seed: int = 0, vertices: int = 8,
                width: tuple[float, float] = (0.03, 0.08), length: tuple[float, float] = (0.05, 0.2)) -> Tensor:
    """Free-form brush strokes (DeepFill v2 style), added until ``missing_fraction`` is covered.

    Each stroke is a random walk of ``vertices`` segments from a uniform start: per segment a
    uniform direction and a length drawn from ``length``, all drawn with one brush whose
    width is drawn from ``width``; both ranges are fractions of ``min(H, W)``. Pixels within
    half the width of a segment (round caps and joints) go missing. The realised missing
    fraction is at least ``missing_fraction`` and exceeds it by at most one stroke.
    """
    if not 0 < missing_fraction < 1:
        raise ValueError(f"missing_fraction must lie in (0, 1), got {missing_fraction}")
    height, width_px = (int(s) for s in shape)
    size = min(height, width_px)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width_px].astype(np.float64)
    missing = np.zeros((height, width_px), dtype=bool)
    while missing.mean() < missing_fraction:
        radius = max(rng.uniform(*width) * size / 2, 0.5)
        point = rng.uniform((0, 0), (height, width_px))
        for _ in range(vertices):
            angle, step = rng.uniform(0, 2 * np.pi), rng.uniform(*length) * size
            end = np.clip(point + step * np.array([np.sin(angle), np.cos(angle)]), 0, (height - 1, width_px - 1))
            missing |= _segment_distance(rows, cols, point, end) <= radius
            point = end
    return torch.from_numpy(~missing).float()


def _segment_distance(rows: np.ndarray, cols: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance (pixels) from each grid point ``(rows, cols)`` to the segment ``start-end``."""
    d = end - start
    t = ((rows - start[0]) * d[0] + (cols - start[1]) * d[1]) / max(float(d @ d), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(rows - start[0] - t * d[0], cols - start[1] - t * d[1])


MASKS = {"box": box_mask, "random_pixel": random_pixel_mask, "stroke": stroke_mask}  # (shape, fraction, seed)


def inpainting(image_size: int, mask: str = "random_pixel", missing_fraction: float = 0.7,
               seed: int = 0) -> Inpainting:
    """Inpainting of ``(B, 1, N, N)`` images, ``N = image_size`` pixels, with a seeded mask.

    ``mask``: ``box`` | ``random_pixel`` | ``stroke``, missing ``missing_fraction`` of the
    pixels.
    """
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose from {sorted(MASKS)}")
    return Inpainting(MASKS[mask]((image_size, image_size), missing_fraction, seed))
