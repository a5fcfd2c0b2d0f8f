"""Diffusion samplers for inverse problems: ``sampler(y, physics, generator=g) -> x``.

Every sampler is built from a :class:`priors.DiffusionPrior` and its settings, reports its
network evaluations per reconstruction as ``nfe``, draws all randomness from the given
``torch.Generator``, treats batch elements independently and returns physical units.
"""

from .dds import DDS
from .dps import DPS
from .joint import JointSampler
from .red_diff import REDDiff
from .volume import DDS3D, SliceCoupled

SAMPLERS: dict[str, type] = {"dds": DDS, "dps": DPS, "red_diff": REDDiff}
"""The 2D samplers by name (``reconstruct(sampler=...)``, ``JointSampler(sampler=...)``)."""

__all__ = ["DDS", "DDS3D", "DPS", "JointSampler", "REDDiff", "SAMPLERS", "SliceCoupled"]
