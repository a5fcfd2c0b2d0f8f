"""Reconstruct on the pixel grid a prior learned and return the user's grid.

A prior's model card may record the pixel size it was trained at (``data.pixel_size_cm``);
a network trained on 1 mm pixels sees a 0.43 mm slice as anatomy 2.3 times too large, and
runs 5 times longer on it than it needs to. :class:`OnPriorGrid` wraps such a sampler: it
reconstructs ``x'`` on a grid of the prior's pixel size covering the same field of view, with
the user's operator composed with the resampling ``U`` from that grid onto the user's
(``A U``: :class:`operators.Resize`, exact adjoint), and returns ``U x'``. The measurement and
the baselines stay on the user's grid, so scores compare like with like. Composition, not a
special case: every sampler runs unchanged on ``A U``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from operators.resampling import Resize

from .errors import ConfigError

__all__ = ["OnPriorGrid", "on_prior_grid", "prior_grid_size", "prior_pixel_cm", "unwrapped", "warn_anisotropic"]

TOLERANCE = 0.1  # relative pixel-size mismatch left alone (the prior's own augmentation covers it)
MULTIPLE = 8  # the UNet halves the grid three times
MIN_SIZE = 32


def unwrapped(method: Any) -> Any:
    """The innermost sampler or method behind wrappers (``.sampler``, ``.method``: progress bars,
    :class:`OnPriorGrid`, :class:`~recon.samplers.volume.PerSlice`), or the first one holding a prior."""
    for _ in range(4):
        if getattr(method, "prior", None) is not None:
            return method
        inner = getattr(method, "sampler", None) or getattr(method, "method", None)
        if inner is None:
            return method
        method = inner
    return method


def prior_pixel_cm(method: Any) -> float | None:
    """The pixel size (cm) on the model card of ``method``'s prior, if it records one (the prior
    is looked up through wrappers: :func:`unwrapped`)."""
    prior = getattr(unwrapped(method), "prior", None)
    if prior is None:
        return None
    value = (getattr(prior, "card", None) or {}).get("data", {}) or {}
    value = value.get("pixel_size_cm") if isinstance(value, dict) else None
    return float(value) if value else None


def warn_anisotropic(methods: dict[str, Any], image: torch.Tensor, pixel_cm: float,
                     thickness_cm: float | None) -> None:
    """Warn, naming the spacing, when a volume sampler that needs isotropic voxels
    (:class:`~recon.samplers.Perpendicular`) gets a volume whose slice distance differs from its pixels."""
    from .samplers.perpendicular import Perpendicular, warn_if_anisotropic

    if image.dim() != 5 or thickness_cm is None:
        return
    for name, method in methods.items():
        if isinstance(unwrapped(method), Perpendicular):
            warn_if_anisotropic((10 * thickness_cm, 10 * pixel_cm, 10 * pixel_cm), name)


def prior_grid_size(size: int, pixel_cm: float, prior_cm: float) -> int:
    """Pixels of the prior's grid over the user's field of view ``size * pixel_cm``: the nearest
    multiple of :data:`MULTIPLE` to ``size * pixel_cm / prior_cm``."""
    return max(MULTIPLE, MULTIPLE * round(size * pixel_cm / prior_cm / MULTIPLE))


class OnPriorGrid:
    """``sampler`` run on an ``(N', N')`` grid and resampled onto the user's ``(N, N)``; see the module."""

    def __init__(self, sampler: Any, size: int, prior_size: int):
        self.sampler = sampler
        self.size, self.prior_size = int(size), int(prior_size)
        self.nfe = int(getattr(sampler, "nfe", 0))
        self.resize = Resize((1, self.prior_size, self.prior_size), (self.size, self.size))
        if hasattr(sampler, "separate"):
            self.separate = self._separate

    def __call__(self, y: torch.Tensor, physics: torch.nn.Module, **kwargs: Any) -> torch.Tensor:
        resize = self.resize.to(y.device)
        return resize(self.sampler(y, physics @ resize, **kwargs))

    def _separate(self, y: torch.Tensor, physics: torch.nn.Module, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        resize = self.resize.to(y.device)
        x, noise = self.sampler.separate(y, physics @ resize, **kwargs)
        return resize(x), noise


def on_prior_grid(methods: dict[str, Any], image: torch.Tensor, pixel_cm: float) -> dict[str, Any]:
    """``methods`` with every sampler whose prior records a pixel size differing from the data's
    ``pixel_cm`` by more than :data:`TOLERANCE` wrapped in :class:`OnPriorGrid`. Only square real 2D
    images ``(1, 1, N, N)`` are resampled; a grid the prior cannot use (under :data:`MIN_SIZE`
    pixels) is an error, and enlarging the data's grid more than 2x a warning."""
    if image.dim() != 4 or image.is_complex() or image.shape[-1] != image.shape[-2]:
        return methods
    size, out = int(image.shape[-1]), {}
    for name, method in methods.items():
        prior_cm = prior_pixel_cm(method) if getattr(method, "nfe", 0) else None
        if prior_cm is None or math.isclose(pixel_cm, prior_cm, rel_tol=TOLERANCE):
            out[name] = method
            continue
        prior_size = prior_grid_size(size, pixel_cm, prior_cm)
        if prior_size < MIN_SIZE:
            raise ConfigError(f"{name}: the data's {size} pixels of {pixel_cm * 10:.3g} mm span only {prior_size} "
                              f"pixels of the prior's {prior_cm * 10:.3g} mm; the prior cannot reconstruct so small a "
                              "field of view (check the pixel size: data.pixel_size_cm)")
        if prior_size > 2 * size:
            warnings.warn(f"{name}: the prior's {prior_cm * 10:.3g} mm pixels are much finer than the data's "
                          f"{pixel_cm * 10:.3g} mm: reconstructing on {prior_size}^2 pixels, {prior_size / size:.1f}x "
                          "the data's grid", stacklevel=2)
        out[name] = OnPriorGrid(method, size, prior_size)
    return out
