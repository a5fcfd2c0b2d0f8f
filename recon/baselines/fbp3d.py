"""The 3D tasks' classical baseline: filtered backprojection of every slice of a volume."""

from __future__ import annotations

from ..samplers.volume import PerSlice
from .fbp import FBP


def fbp_per_slice(filter_name: str = "hann") -> PerSlice:
    """:class:`~recon.baselines.FBP` with ``filter_name`` on every slice of a
    :class:`operators.volume.SliceStack` measurement, independently (1024 slices at a time)."""
    return PerSlice(FBP(filter_name), chunk=1024)
