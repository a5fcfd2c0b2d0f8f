"""Diffusion priors: the ADM UNet, VP noise schedules, loading, training."""

from priors.analytic import GaussianMixture, GaussianMixturePrior, GaussianPrior, mixture_posterior
from priors.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from priors.prior import DiffusionPrior, Normalization
from priors.registry import available_priors, load_prior
from priors.schedule import VPSchedule
from priors.stationary import StationaryGaussianPrior
from priors.unet import UNetModel, from_guided_diffusion

__all__ = [
    "CheckpointError",
    "DiffusionPrior",
    "GaussianMixture",
    "GaussianMixturePrior",
    "GaussianPrior",
    "Normalization",
    "StationaryGaussianPrior",
    "UNetModel",
    "VPSchedule",
    "available_priors",
    "from_guided_diffusion",
    "load_checkpoint",
    "load_prior",
    "mixture_posterior",
    "save_checkpoint",
]
