"""recon: reconstruction algorithms (samplers, baselines), metrics, I/O and the application.

The library surface: :func:`reconstruct`, the diffusion samplers (:class:`DDS`, :class:`DPS`,
:class:`REDDiff`), the classical baselines and the fastMRI-convention metrics. The command
line (``python -m recon``) lives in :mod:`recon.app` and is not imported here.
"""

from .api import SAMPLERS, reconstruct
from .baselines import FBP, TV, Bicubic, CGSense, L1Wavelet, ZeroFilled
from .metrics import evaluate, nmse, psnr, ssim
from .samplers import DDS, DPS, REDDiff

__all__ = ["DDS", "DPS", "FBP", "SAMPLERS", "TV", "Bicubic", "CGSense", "L1Wavelet", "REDDiff", "ZeroFilled",
           "evaluate", "nmse", "psnr", "reconstruct", "ssim"]
