"""``DiffusionPrior``: a noise-prediction network, its VP schedule, and data normalisation.

Samplers work in the network's *model space*: ``z = (x - offset) / scale`` for real images
``(B, 1, H, W)`` in physical units (e.g. attenuation in 1/cm), and for complex images
``(B, 1, H, W)`` complex the channels ``[Re x, Im x] / scale``. :meth:`encode` and
:meth:`decode` convert; forward operators always see physical units. The forward process is
``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`` with ``t`` a training-step index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .schedule import VPSchedule

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Normalization:
    """Affine map between physical units and model space: ``z = (x - offset) / scale``.

    ``complex_channels``: images are complex and occupy 2 channels (real, imaginary);
    ``offset`` must then be 0. ``units`` documents the physical unit (e.g. ``"1/cm"``).
    """

    offset: float = 0.0
    scale: float = 1.0
    complex_channels: bool = False
    units: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Normalization":
        return cls(float(d.get("offset", 0.0)), float(d.get("scale", 1.0)),
                   bool(d.get("complex_channels", False)), str(d.get("units", "")))

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "scale": self.scale,
                "complex_channels": self.complex_channels, "units": self.units}


class DiffusionPrior(nn.Module):
    """Network + schedule + normalisation; what every sampler sees of a prior.

    Args:
        network: ``network(z_t, t) -> (B, C or 2C, H, W)``, eps prediction (the first C
            channels when the network also predicts variances, ``learn_sigma``).
        schedule: the VP schedule the network was trained with (T training steps).
        normalization: physical units <-> model space.
        channels: C, channels of model-space images.
        card: the model card (metadata), kept for reports.
    """

    def __init__(self, network: nn.Module, schedule: VPSchedule, normalization: Normalization,
                 channels: int = 1, card: Mapping[str, Any] | None = None):
        super().__init__()
        self.network = network
        self.schedule = schedule
        self.normalization = normalization
        self.channels = int(channels)
        self.card = dict(card or {})
        self.precision = "fp32"
        self.channels_last = False

    @property
    def precision(self) -> str:
        """Network arithmetic: ``fp32`` (default), or ``bf16`` / ``fp16`` autocast (mixed
        precision: convolutions and matmuls in 16 bits, ``eps`` returned in the input's dtype;
        the samplers' own arithmetic stays in fp32)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision={value!r}: expected one of {', '.join(PRECISIONS)}")
        self._precision = value

    def use_channels_last(self) -> "DiffusionPrior":
        """Run a convolutional network in the channels-last memory layout (weights and inputs).
        Measured on the 2-core CPU: 18-31 % less time per UNet evaluation at 128 x 128
        (benchmarks/RESULTS.md); results equal to rounding. Returns ``self``."""
        self.network.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def compile(self, backend: str = "inductor") -> "DiffusionPrior":
        """Compile the network in place with ``torch.compile(backend=...)`` (for GPUs; no gain
        measured on the CPU). The compiler picks its own memory layouts, and autograd tracing
        fails on channels-last GroupNorm, so the network returns to the contiguous layout first.
        Returns ``self``."""
        self.network.to(memory_format=torch.contiguous_format)
        self.channels_last = False
        self.network.compile(backend=backend)
        return self

    # --- units ---------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Physical ``(B, 1, H, W)`` (real or complex) -> model space ``(B, C, H, W)``."""
        n = self.normalization
        if n.complex_channels:
            return torch.cat([x.real, x.imag], dim=1) / n.scale
        return (x - n.offset) / n.scale

    def decode(self, z: Tensor) -> Tensor:
        """Model space ``(B, C, H, W)`` -> physical ``(B, 1, H, W)`` (complex if configured)."""
        n = self.normalization
        if n.complex_channels:
            return torch.complex(z[:, :1].float(), z[:, 1:2].float()) * n.scale
        return z * n.scale + n.offset

    # --- the network ----------------------------------------------------------------
    # Samplers pass a Python int ``t``; the coefficients below are then Python floats
    # (computed with the same float arithmetic as the tensor path) and the network's
    # timestep vector is a fill, so the sampling loop makes no host-device transfer.
    def _timesteps(self, t: Tensor | int, batch: int, device: torch.device) -> Tensor:
        if _is_scalar(t):
            return torch.full((batch,), float(t), device=device)
        return torch.as_tensor(t, device=device).float()

    def _per_step(self, values: Tensor, like: Tensor) -> Tensor | float:
        """``values`` (from the CPU schedule) as a scalar or as ``(B, 1, ...)`` for ``like``."""
        v = values.to(like.real.dtype if like.is_complex() else like.dtype)
        return v.item() if v.dim() == 0 else v.to(like.device).reshape(-1, *[1] * (like.dim() - 1))

    def eps(self, z_t: Tensor, t: Tensor | int) -> Tensor:
        """Predicted noise ``eps(z_t, t)``, ``(B, C, H, W)``; ``t`` scalar or ``(B,)``."""
        dtype = PRECISIONS[self.precision]
        inputs = z_t.contiguous(memory_format=torch.channels_last) if self.channels_last and z_t.dim() == 4 else z_t
        with torch.autocast(z_t.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.network(inputs, self._timesteps(t, z_t.shape[0], z_t.device))
        return out[:, : self.channels].to(z_t.dtype).contiguous()

    def x0(self, z_t: Tensor, t: Tensor | int) -> Tensor:
        """Tweedie's posterior mean ``E[z_0 | z_t] = (z_t - sqrt(1-abar) eps) / sqrt(abar)``."""
        return self.x0_from_eps(z_t, t, self.eps(z_t, t))

    def x0_from_eps(self, z_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """Tweedie estimate from a given ``eps`` (no network call)."""
        abar = self.schedule.alpha_bar(_cpu_steps(t)).to(z_t.real.dtype if z_t.is_complex() else z_t.dtype)
        return (z_t - self._per_step((1 - abar).sqrt(), z_t) * eps) / self._per_step(abar.sqrt(), z_t)

    def score(self, z_t: Tensor, t: Tensor | int) -> Tensor:
        """``grad log p_t(z_t) = -eps / sqrt(1 - abar_t)``."""
        return -self.eps(z_t, t) / self._per_step(self.schedule.sigma(_cpu_steps(t)), z_t)


def _is_scalar(t: Tensor | int) -> bool:
    return not isinstance(t, Tensor) or t.dim() == 0


def _cpu_steps(t: Tensor | int) -> Tensor:
    """Timesteps on the CPU, where the schedule's table lives (a no-op for Python ints)."""
    return torch.as_tensor(int(t) if _is_scalar(t) else t.cpu())
