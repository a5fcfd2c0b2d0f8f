"""Diffusion samplers for inverse problems: ``sampler(y, physics, generator=g) -> x``.

Every sampler is built from a :class:`priors.DiffusionPrior` and its settings, reports its
network evaluations per reconstruction as ``nfe``, draws all randomness from the given
``torch.Generator``, treats batch elements independently and returns physical units.
"""

from .daps import DAPS
from .dds import DDS
from .diffpir import DiffPIR
from .dps import DPS
from .joint import JointSampler
from .perpendicular import Perpendicular
from .pigdm import PiGDM
from .pnp_dm import PnPDM
from .red_diff import REDDiff
from .registry import SAMPLERS
from .safety import NonFiniteError
from .steerable import Steerable
from .volume import DDS3D, SliceCoupled

__all__ = ["DAPS", "DDS", "DDS3D", "DPS", "DiffPIR", "JointSampler", "NonFiniteError", "Perpendicular", "PiGDM", "PnPDM", "REDDiff",
           "SAMPLERS",
           "SliceCoupled", "Steerable"]
