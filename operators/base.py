"""Linear operator algebra: the contract every forward model in recon follows.

A ``LinearOperator`` maps batched tensors ``(B, *in_shape) -> (B, *out_shape)``. It is a
``torch.nn.Module`` so that buffers (masks, coil maps, angles) move with ``.to(device)``.
Subclasses implement :meth:`forward` and :meth:`adjoint`; everything else (``A.H``,
``A @ B``, ``A + B``, ``c * A``, :meth:`normal`, :meth:`norm`) is derived here.
Complex operators use the Hermitian adjoint; the inner product is ``sum(conj(a) * b)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

Shape = tuple[int, ...]


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Batched inner product ``<a, b> = sum(conj(a) * b)`` over all but the first dim.

    Returns shape ``(B,)``; complex when the inputs are complex.
    """
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.reshape(prod.shape[0], -1).sum(dim=1)


def batch_norm2(a: Tensor) -> Tensor:
    """Squared L2 norm per batch element, ``(B,)`` real."""
    return inner(a, a).real


def adjoint_error(forward, adjoint, x: Tensor, y: Tensor) -> float:
    """Largest ``|<A x, y> - <x, A^H y>| / (||A x|| ||y||)`` over the batch (inner products in
    double precision): how far ``adjoint`` is from the adjoint of ``forward``, on the
    Cauchy-Schwarz scale, so that the rounding of ``A x`` itself does not dominate as it does
    relative to ``|<A x, y>|`` with signed random inputs. ``forward``/``adjoint``: callables
    (e.g. ``A`` and ``A.adjoint``)."""
    def wide(t: Tensor) -> Tensor:
        return t.to(torch.complex128 if t.is_complex() else torch.float64)

    ax, aty, x, y = wide(forward(x)), wide(adjoint(y)), wide(x), wide(y)
    scale = (batch_norm2(ax) * batch_norm2(y)).sqrt()
    return float(((inner(ax, y) - inner(x, aty)).abs() / scale).max())


class LinearOperator(torch.nn.Module):
    """Base class of batched linear operators ``A: (B, *in_shape) -> (B, *out_shape)``.

    ``in_shape``/``out_shape`` exclude the batch dimension. Subclasses override
    :meth:`forward` and :meth:`adjoint`; both must be differentiable (autograd) and
    satisfy ``<A x, y> == <x, A^H y>`` to float tolerance.
    """

    is_linear = True

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]):
        super().__init__()
        self.in_shape: Shape = tuple(int(s) for s in in_shape)
        self.out_shape: Shape = tuple(int(s) for s in out_shape)

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- derived operations -------------------------------------------------------
    @property
    def H(self) -> "LinearOperator":
        """The adjoint as an operator (``A.H(y) == A.adjoint(y)``)."""
        return AdjointOperator(self)

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    @torch.no_grad()
    def norm(
        self,
        iterations: int = 50,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> float:
        """Spectral norm ``||A||_2`` estimated by power iteration on ``A^H A``."""
        device = device if device is not None else _module_device(self)
        x = torch.randn((1, *self.in_shape), generator=generator, dtype=dtype, device=device)
        x = x / batch_norm2(x).sqrt().reshape(-1, *[1] * len(self.in_shape))
        eig = torch.zeros(())
        for _ in range(iterations):
            z = self.normal(x)
            eig = batch_norm2(z).sqrt()[0]
            if eig == 0:
                return 0.0
            x = z / eig
        return float(eig.sqrt())

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return ComposedOperator(self, other)
        if isinstance(other, Tensor):
            return self.forward(other)
        return NotImplemented

    def __add__(self, other: "LinearOperator") -> "LinearOperator":
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, other)

    def __sub__(self, other: "LinearOperator") -> "LinearOperator":
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, ScaledOperator(other, -1.0))

    def __mul__(self, scale: float | complex) -> "LinearOperator":
        if isinstance(scale, (int, float, complex)):
            return ScaledOperator(self, scale)
        return NotImplemented

    __rmul__ = __mul__

    def __neg__(self) -> "LinearOperator":
        return ScaledOperator(self, -1.0)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


def _module_device(module: torch.nn.Module) -> torch.device:
    for t in list(module.buffers()) + list(module.parameters()):
        return t.device
    return torch.device("cpu")


class AdjointOperator(LinearOperator):
    """``A^H`` as an operator; ``A.H.H`` is ``A`` again."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.out_shape, op.in_shape)
        self.op = op

    def forward(self, y: Tensor) -> Tensor:
        return self.op.adjoint(y)

    def adjoint(self, x: Tensor) -> Tensor:
        return self.op.forward(x)

    @property
    def H(self) -> LinearOperator:
        return self.op


class ComposedOperator(LinearOperator):
    """``(A @ B)(x) = A(B(x))``; the adjoint is ``B^H A^H``."""

    def __init__(self, outer: LinearOperator, inner_op: LinearOperator):
        if outer.in_shape != inner_op.out_shape:
            raise ValueError(
                f"cannot compose: outer operator takes {outer.in_shape} but inner gives {inner_op.out_shape}"
            )
        super().__init__(inner_op.in_shape, outer.out_shape)
        self.outer = outer
        self.inner = inner_op

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(self.inner(x))

    def adjoint(self, y: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))


class SumOperator(LinearOperator):
    """``(A + B)(x) = A(x) + B(x)`` for operators of equal shapes."""

    def __init__(self, a: LinearOperator, b: LinearOperator):
        if a.in_shape != b.in_shape or a.out_shape != b.out_shape:
            raise ValueError(
                f"cannot add operators of shapes {a.in_shape}->{a.out_shape} and {b.in_shape}->{b.out_shape}"
            )
        super().__init__(a.in_shape, a.out_shape)
        self.a = a
        self.b = b

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x) + self.b(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.a.adjoint(y) + self.b.adjoint(y)


class ScaledOperator(LinearOperator):
    """``(c A)(x) = c A(x)``; the adjoint uses ``conj(c)``."""

    def __init__(self, op: LinearOperator, scale: float | complex):
        super().__init__(op.in_shape, op.out_shape)
        self.op = op
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.op(x)

    def adjoint(self, y: Tensor) -> Tensor:
        scale = self.scale.conjugate() if isinstance(self.scale, complex) else self.scale
        return scale * self.op.adjoint(y)


class Identity(LinearOperator):
    """The identity on tensors of shape ``(B, *shape)``."""

    def __init__(self, shape: Sequence[int]):
        super().__init__(shape, shape)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y


def identity(image_size: int) -> Identity:
    """``Identity((1, image_size, image_size))``, denoising, as a config factory (``image_size``
    in pixels)."""
    return Identity((1, int(image_size), int(image_size)))
