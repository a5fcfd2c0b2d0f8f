"""The 2D samplers by name, where ``reconstruct(sampler=...)`` and ``JointSampler`` look them up."""

from .dds import DDS
from .dps import DPS
from .red_diff import REDDiff

SAMPLERS: dict[str, type] = {"dds": DDS, "dps": DPS, "red_diff": REDDiff}
"""The 2D samplers by name (``reconstruct(sampler=...)``, ``JointSampler(sampler=...)``)."""
