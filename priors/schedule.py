"""Variance-preserving (VP) noise schedules and their respacing to fewer sampling steps.

``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` for training-step indices ``t = 0..T-1``.
A respaced schedule keeps K of those indices (as guided-diffusion's ``space_timesteps`` with
one section); its chain has betas ``1 - abar_k / abar_{k-1}``, so its cumulative products
equal the full schedule's ``abar`` at the kept steps. Timesteps are always training-step
indices, which is what the network is conditioned on; ``t = -1`` stands for clean data
(``abar = 1``), the target of the last sampling step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["VPSchedule"]


def _space_timesteps(num_steps: int, count: int) -> list[int]:
    """``count`` evenly spaced indices in ``[0, num_steps - 1]``, both ends included.

    Reproduces guided-diffusion's ``space_timesteps(num_steps, [count])``, including its
    accumulated float stride and round-half-to-even.
    """
    if not 1 <= count <= num_steps:
        raise ValueError(f"cannot respace {num_steps} steps to {count}")
    stride = (num_steps - 1) / (count - 1) if count > 1 else 1.0
    kept, pos = [], 0.0
    for _ in range(count):
        kept.append(round(pos))
        pos += stride
    return kept


def _quad_timesteps(num_steps: int, count: int) -> list[int]:
    """``count`` indices in ``[0, num_steps - 1]`` denser near 0: ``t_k = (T-1)(1 - sqrt(1 - k/(K-1)))``.

    DiffPIR's "quad" skip (``main_ddpir_*.py``: ``sqrt(linspace(0, T^2, K))`` counted from the
    noisy end): the spacing falls from ``~T/sqrt(K)`` at the noisy end to ``~T/(2K)`` at the clean
    end, half uniform spacing's there. Refused where rounding would repeat an index (``K > ~T/2``).
    """
    if not 2 <= count <= num_steps:
        raise ValueError(f"cannot respace {num_steps} steps to {count} with quad spacing")
    last = num_steps - 1
    kept = [round(last * (1.0 - math.sqrt(1.0 - k / (count - 1)))) for k in range(count)]
    if len(set(kept)) != count:
        raise ValueError(f"quad spacing of {num_steps} steps to {count} repeats steps; use at most "
                         f"{num_steps // 2} steps or spacing='uniform'")
    return kept


SPACINGS = {"uniform": _space_timesteps, "quad": _quad_timesteps}


@dataclass(frozen=True, eq=False)
class VPSchedule:
    """A VP schedule over ``T`` training steps, sampled at the ``K`` kept ``timesteps``.

    Attributes:
        train_alphas_cumprod: (T,) float64, ``abar_t`` of the training schedule.
        timesteps: (K,) int64, ascending training-step indices kept for sampling
            (all T for an unrespaced schedule).
    """

    train_alphas_cumprod: Tensor
    timesteps: Tensor

    @classmethod
    def from_betas(cls, betas: Tensor) -> "VPSchedule":
        """Schedule with the given (T,) training betas, all steps kept."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, dim=0), torch.arange(len(betas)))

    @classmethod
    def linear(
        cls, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> "VPSchedule":
        """DDPM/ADM linear betas; the endpoints scale by ``1000 / steps`` as in ADM."""
        scale = 1000.0 / steps
        return cls.from_betas(
            torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64)
        )

    @classmethod
    def cosine(cls, steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "VPSchedule":
        """Nichol & Dhariwal cosine schedule, ``abar(u) = cos((u + s) / (1 + s) * pi / 2)^2``."""
        u = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        return cls.from_betas(torch.clamp(1.0 - f[1:] / f[:-1], max=max_beta))

    @classmethod
    def from_name(cls, name: str, steps: int = 1000) -> "VPSchedule":
        """``"linear"`` or ``"cosine"`` over ``steps`` training steps."""
        makers = {"linear": cls.linear, "cosine": cls.cosine}
        if name not in makers:
            raise ValueError(f"unknown VP schedule {name!r}; choose from {sorted(makers)}")
        return makers[name](steps)

    @property
    def num_train_steps(self) -> int:
        return len(self.train_alphas_cumprod)

    def __len__(self) -> int:
        """Number of kept (sampling) steps K."""
        return len(self.timesteps)

    def respace(self, steps: int, spacing: str = "uniform") -> "VPSchedule":
        """The same training schedule sampled at ``steps`` training steps: evenly spaced
        (``uniform``) or denser near clean data (``quad``, DiffPIR's; :func:`_quad_timesteps`)."""
        if spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}; choose from {sorted(SPACINGS)}")
        kept = SPACINGS[spacing](self.num_train_steps, steps)
        return VPSchedule(self.train_alphas_cumprod, torch.tensor(kept, dtype=torch.int64))

    @property
    def alphas_cumprod(self) -> Tensor:
        """(K,) float64 ``abar`` at the kept steps."""
        return self.train_alphas_cumprod[self.timesteps]

    @property
    def betas(self) -> Tensor:
        """(K,) float64 betas of the kept chain: ``1 - abar_k / abar_{k-1}``, ``abar_{-1} = 1``."""
        abar = self.alphas_cumprod
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return 1.0 - abar / prev

    @property
    def alphas(self) -> Tensor:
        """(K,) float64 ``1 - betas`` of the kept chain."""
        return 1.0 - self.betas

    def alpha_bar(self, t: Tensor | int, dtype: torch.dtype = torch.float32) -> Tensor:
        """``abar_t`` for training-step indices ``t`` (any shape; ``-1`` gives 1).

        Returned with the shape and device of ``t``, computed in float64, cast to ``dtype``.
        """
        t = torch.as_tensor(t)
        table = torch.cat([self.train_alphas_cumprod.new_ones(1), self.train_alphas_cumprod])
        return table[t.long().cpu() + 1].to(device=t.device, dtype=dtype)

    def sigma(self, t: Tensor | int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Noise level ``sqrt(1 - abar_t)``, like :meth:`alpha_bar`."""
        return (1.0 - self.alpha_bar(t, torch.float64)).sqrt().to(dtype)

    def sampling_timesteps(self) -> list[int]:
        """The kept training-step indices in sampling order (descending)."""
        return self.timesteps.flip(0).tolist()

    def step_pairs(self) -> list[tuple[int, int]]:
        """``(t, t_prev)`` per sampling step, descending; the last ``t_prev`` is ``-1``."""
        ts = self.sampling_timesteps()
        return list(zip(ts, ts[1:] + [-1]))
