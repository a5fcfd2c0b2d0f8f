"""The 2D samplers by name, where ``reconstruct(sampler=...)`` and ``JointSampler`` look them up."""

from .daps import DAPS
from .dds import DDS
from .diffpir import DiffPIR
from .dps import DPS
from .pigdm import PiGDM
from .pnp_dm import PnPDM
from .red_diff import REDDiff

SAMPLERS: dict[str, type] = {"daps": DAPS, "dds": DDS, "diffpir": DiffPIR, "dps": DPS, "pigdm": PiGDM,
                             "pnp_dm": PnPDM, "red_diff": REDDiff}
"""The 2D samplers by name (``reconstruct(sampler=...)``, ``JointSampler(sampler=...)``)."""
