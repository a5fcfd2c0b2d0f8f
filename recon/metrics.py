"""Image quality metrics: PSNR, SSIM, NMSE, and z-PSNR for volumes.

Conventions (those of fastMRI's ``evaluate.py``): the *target* sets the data range,
``data_range = max(target)`` unless given (for CT in attenuation units this is the
brightest structure, usually bone; for MRI magnitude the volume's maximum). PSNR and NMSE
are computed over the whole array (a slice or a volume). SSIM uses a 7x7 uniform window,
K1 = 0.01, K2 = 0.03 and sample covariance, computed per 2D slice over the window positions
that lie fully inside the image and averaged (identical to scikit-image's
``structural_similarity(..., data_range=max)`` per slice).

SSIM inside the object (``ssim_object``): the same SSIM map averaged only over the windows
centred inside the target's object (:func:`object_mask`: magnitude above 10 % of the maximum,
holes filled, grown by 3 pixels). Whole-image SSIM rewards matching the background: an MRI
reconstruction that is exactly 0 outside the coil maps' support scores low against an RSS target
with a noise floor there, although the anatomy is equally good. fastMRI's SSIM stays the
headline number; ``ssim_object`` says how much of it is background.

z-PSNR is the PSNR of the slice-to-slice differences ``x[k+1] - x[k]`` against the target's
(same data range): it scores how well neighbouring slices agree, i.e. the streaks that slice-wise
reconstruction leaves in coronal and sagittal views, which whole-volume PSNR mixes with in-plane
error. Independent errors of variance ``s^2`` per voxel give z-PSNR = PSNR - 3.01 dB; an error
shared by every slice gives infinity (up to rounding).

Inputs are torch tensors or NumPy arrays of matching shape ``(..., H, W)``; results are
Python floats. Complex inputs are compared in magnitude.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _as_tensor(a: ArrayLike) -> Tensor:
    t = torch.as_tensor(np.asarray(a)) if isinstance(a, np.ndarray) else a.detach()
    if t.is_complex():
        t = t.abs()
    return t.to(torch.float64).cpu()


def _prepare(recon: ArrayLike, target: ArrayLike) -> tuple[Tensor, Tensor]:
    x, ref = _as_tensor(recon), _as_tensor(target)
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch: reconstruction {tuple(x.shape)} vs target {tuple(ref.shape)}")
    return x, ref


def nmse(recon: ArrayLike, target: ArrayLike) -> float:
    """Normalised MSE ``||recon - target||^2 / ||target||^2`` over the whole array."""
    x, ref = _prepare(recon, target)
    return float(((x - ref) ** 2).sum() / (ref**2).sum())


def psnr(recon: ArrayLike, target: ArrayLike, data_range: float | None = None) -> float:
    """PSNR in dB, ``10 log10(data_range^2 / MSE)``; ``data_range`` defaults to ``max(target)``."""
    x, ref = _prepare(recon, target)
    peak = float(ref.max()) if data_range is None else float(data_range)
    mse = float(((x - ref) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def object_mask(target: ArrayLike, fraction: float = 0.1, grow: int = 3) -> Tensor:
    """Boolean ``(..., H, W)``: per slice, where ``|target|`` exceeds ``fraction`` of its stack
    maximum, holes filled (ventricles, sinuses) and grown by ``grow`` pixels (the object's edge)."""
    from scipy import ndimage

    ref = _as_tensor(target)
    flat = (ref > fraction * float(ref.max())).reshape(-1, *ref.shape[-2:]).numpy()
    structure = ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), grow) if grow else None
    out = [ndimage.binary_dilation(ndimage.binary_fill_holes(m), structure) if grow else ndimage.binary_fill_holes(m)
           for m in flat]
    return torch.from_numpy(np.stack(out)).reshape(ref.shape)


def ssim(
    recon: ArrayLike,
    target: ArrayLike,
    data_range: float | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    mask: ArrayLike | None = None,
) -> float:
    """Mean SSIM over 2D slices (uniform ``win_size`` window, sample covariance).

    Arrays of shape ``(..., H, W)`` are treated as a stack of slices, all using one
    ``data_range`` (default ``max(target)`` over the whole stack, fastMRI's volume max).
    ``mask`` (boolean, the arrays' shape): average only the windows centred inside it, per slice.
    """
    x, ref = _prepare(recon, target)
    if x.dim() < 2 or min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}, got {tuple(x.shape)}")
    peak = float(ref.max()) if data_range is None else float(data_range)
    x = x.reshape(-1, 1, *x.shape[-2:])
    ref = ref.reshape(-1, 1, *ref.shape[-2:])
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    n = win_size**2
    cov_norm = n / (n - 1)

    def mean(a: Tensor) -> Tensor:
        return F.avg_pool2d(a, win_size, stride=1)

    mx, my = mean(x), mean(ref)
    vx = cov_norm * (mean(x * x) - mx * mx)
    vy = cov_norm * (mean(ref * ref) - my * my)
    vxy = cov_norm * (mean(x * ref) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    if mask is None:
        return float(s.mean(dim=(1, 2, 3)).mean())
    half = win_size // 2
    inside = torch.as_tensor(np.asarray(mask)).reshape(-1, 1, *x.shape[-2:])[..., half:x.shape[-2] - half,
                                                                               half:x.shape[-1] - half].to(s.dtype)
    count = inside.sum(dim=(1, 2, 3))
    per_slice = (s * inside).sum(dim=(1, 2, 3)) / count.clamp_min(1)
    return float(per_slice[count > 0].mean()) if bool((count > 0).any()) else math.nan


def z_psnr(recon: ArrayLike, target: ArrayLike, data_range: float | None = None) -> float:
    """PSNR in dB of the differences between neighbouring slices of ``(..., D, H, W)`` arrays, ``D >= 2``.

    ``data_range`` defaults to ``max(target)`` (that of :func:`psnr`, so the two compare).
    """
    x, ref = _prepare(recon, target)
    if x.dim() < 3 or x.shape[-3] < 2:
        raise ValueError(f"z-PSNR needs a volume (..., D, H, W) with D >= 2 slices, got {tuple(x.shape)}")
    peak = float(ref.max()) if data_range is None else float(data_range)
    mse = float(((x.diff(dim=-3) - ref.diff(dim=-3)) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def evaluate(recon: ArrayLike, target: ArrayLike, data_range: float | None = None) -> dict[str, float]:
    """``{"psnr", "ssim", "ssim_object", "nmse"}`` of ``recon`` against ``target``, and ``"z_psnr"`` for volumes.

    A volume is a 5D array ``(B, C, D, H, W)`` with ``D >= 2`` (the 3D tasks' layout).
    """
    metrics = {
        "psnr": psnr(recon, target, data_range),
        "ssim": ssim(recon, target, data_range),
        "ssim_object": ssim(recon, target, data_range, mask=object_mask(target)),
        "nmse": nmse(recon, target),
    }
    if len(recon.shape) == 5 and recon.shape[2] >= 2:
        metrics["z_psnr"] = z_psnr(recon, target, data_range)
    return metrics
