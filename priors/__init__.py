"""Diffusion priors: the ADM UNet, VP noise schedules."""

from priors.schedule import VPSchedule
from priors.unet import UNetModel, from_guided_diffusion

__all__ = ["from_guided_diffusion", "UNetModel", "VPSchedule"]
