"""The 2D non-uniform FFT that non-Cartesian operators use: FINUFFT plans behind torch autograd.

Convention (the Cartesian operators' own, :func:`operators.fft2c`): an image ``f`` of ``(H, W)``
pixels, pixel ``(h, w)`` at centred coordinates ``(h - H // 2, w - W // 2)``, goes to the
samples ``F f (k) = sum_{h, w} f[h, w] exp(-i (k_y (h - H // 2) + k_x (w - W // 2))) / sqrt(H W)``
at angular frequencies ``k = (k_y, k_x)`` in radians per pixel, ``[-pi, pi]`` (Nyquist at
``+-pi``). On the Cartesian grid ``k = 2 pi (n - N // 2) / N`` this is ``fft2c`` exactly (unitary);
the adjoint is the type-1 transform with the same scaling.

Why FINUFFT: on this project's 2-core CPU it is the fastest of the maintained NUFFTs with
Python bindings that we measured (8 coils, 256^2, 64 spokes of 512 samples, forward plus
adjoint: FINUFFT 50 ms at eps 1e-4, sigpy 100 ms, torchkbnufft 520 ms; benchmarks/RESULTS.md);
its type 1 and type 2 transforms spread and interpolate with one kernel on one grid, so they are
adjoints of each other to rounding. Tensors on a CUDA device use cufinufft (same plans and
conventions) when it is installed, else they take a round trip through the CPU.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["NufftPlan", "check_trajectory", "nufft", "nufft_adjoint"]

_PI_TOLERANCE = 1e-4  # float32 rounding of trajectories written as exactly +-pi


def check_trajectory(trajectory: Tensor | np.ndarray, name: str = "trajectory") -> Tensor:
    """A real ``(..., 2)`` float tensor of ``(k_y, k_x)`` radians in ``[-pi, pi]``, or ValueError
    naming the problem (the largest ``|k|`` when out of range: a trajectory in pixel or 1/FOV
    units, e.g. BART's, must be converted by ``2 pi / N`` first)."""
    traj = torch.as_tensor(trajectory)
    if traj.is_complex() or not traj.is_floating_point():
        raise ValueError(f"{name}: need real floating-point (k_y, k_x) radians, got dtype {traj.dtype}")
    if traj.dim() < 2 or traj.shape[-1] != 2 or traj.numel() == 0:
        raise ValueError(f"{name}: need shape (..., 2) with at least one sample, got {tuple(traj.shape)}")
    if not bool(torch.isfinite(traj).all()):
        raise ValueError(f"{name}: holds NaN or Inf")
    largest = float(traj.abs().max())
    if largest > math.pi * (1 + _PI_TOLERANCE):
        raise ValueError(f"{name}: |k| reaches {largest:.4g} rad, outside [-pi, pi]; convert pixel units "
                         f"(k_pixel in [-N/2, N/2]) with k = 2 pi k_pixel / N")
    return traj


class NufftPlan:
    """The transforms for one trajectory and image shape: ``forward`` (type 2, image -> samples)
    and ``adjoint`` (type 1), for ``(n, H, W)`` / ``(n, M)`` complex tensors, any ``n``.

    FINUFFT plans are made lazily per (device, precision, n) and kept; they are never pickled
    (a copy sent to another process makes its own). ``eps``: FINUFFT's requested relative
    accuracy (1e-5 by default; the data carry noise far above it).
    """

    def __init__(self, trajectory: Tensor, shape: tuple[int, int], eps: float = 1e-5):
        traj = check_trajectory(trajectory).reshape(-1, 2)
        self.shape, self.eps = (int(shape[0]), int(shape[1])), float(eps)
        self.points = traj.detach().to(torch.float64).cpu()
        self.samples = int(self.points.shape[0])
        self._plans: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_plans"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.shape[0] * self.shape[1])

    def forward(self, image: Tensor) -> Tensor:
        """``(n, H, W)`` complex -> ``(n, M)`` samples."""
        return self._run(2, image, (image.shape[0], self.samples))

    def adjoint(self, samples: Tensor) -> Tensor:
        """``(n, M)`` complex -> ``(n, H, W)`` image."""
        return self._run(1, samples, (samples.shape[0], *self.shape))

    def _run(self, kind: int, data: Tensor, out_shape: tuple[int, ...]) -> Tensor:
        if data.shape[0] == 0:
            return data.new_zeros(out_shape)
        if data.is_cuda:
            plan = self._plan(kind, data.dtype, data.shape[0], data.device)
            if plan is not None:
                out = torch.as_tensor(plan.execute(data.detach().resolve_conj().contiguous()), device=data.device)
                return out.reshape(out_shape) * self.scale
            return self._run(kind, data.cpu(), out_shape).to(data.device)
        plan = self._plan(kind, data.dtype, data.shape[0], data.device)
        out = plan.execute(data.detach().resolve_conj().contiguous().numpy())
        return torch.from_numpy(np.asarray(out).reshape(out_shape)) * self.scale

    def _plan(self, kind: int, dtype: torch.dtype, n: int, device: torch.device) -> Any:
        key = (kind, dtype, n, str(device), torch.get_num_threads() if device.type == "cpu" else 0)
        with self._lock:
            if key not in self._plans:
                self._plans[key] = self._make(kind, dtype, n, device)
            return self._plans[key]

    def _make(self, kind: int, dtype: torch.dtype, n: int, device: torch.device) -> Any:
        double = dtype == torch.complex128
        if device.type == "cuda":
            try:
                import cufinufft
            except ImportError:
                return None
            points = self.points.to(device=device, dtype=torch.float64 if double else torch.float32)
            plan = cufinufft.Plan(kind, self.shape, n_trans=n, eps=self.eps,
                                  dtype="complex128" if double else "complex64")
            plan.setpts(points[:, 0].contiguous(), points[:, 1].contiguous())
            return plan
        import finufft

        points = self.points.numpy().astype(np.float64 if double else np.float32)
        plan = finufft.Plan(kind, self.shape, n_trans=n, eps=self.eps, dtype="complex128" if double else "complex64",
                            nthreads=torch.get_num_threads())
        plan.setpts(np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1]))
        return plan


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, image: Tensor, plan: NufftPlan) -> Tensor:
        ctx.plan = plan
        return plan.forward(image)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return nufft_adjoint(grad, ctx.plan), None


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, samples: Tensor, plan: NufftPlan) -> Tensor:
        ctx.plan = plan
        return plan.adjoint(samples)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return nufft(grad, ctx.plan), None


def nufft(image: Tensor, plan: NufftPlan) -> Tensor:
    """Differentiable type-2 NUFFT: complex ``(n, H, W)`` -> ``(n, M)`` (autograd: the adjoint)."""
    return _Forward.apply(image, plan)


def nufft_adjoint(samples: Tensor, plan: NufftPlan) -> Tensor:
    """Differentiable adjoint NUFFT: complex ``(n, M)`` -> ``(n, H, W)`` (autograd: the forward)."""
    return _Adjoint.apply(samples, plan)
