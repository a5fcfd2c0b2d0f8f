"""CT system matrices: astra computes the geometry once, torch applies it on any device.

astra's CPU projectors (Joseph interpolation ``linear`` for parallel beam, line lengths
``line_fanflat`` for fan beam, the ones ``_astra`` uses) can write out their weights as a
sparse matrix ``W`` (rows: detector bins, view-major; columns: pixels, row-major; pixel units).
:class:`MatrixProjector` keeps ``W`` and its explicit transpose ``W^T`` as torch CSR tensors and
projects a whole batch, or every slice of a volume, with one sparse-dense product on the
device of the input (on the CPU, one per :data:`CPU_CHUNK` slices):

* ``project``: ``(B, N^2) -> (B, M)`` is ``(W @ X^T)^T``; ``backproject`` multiplies by ``W^T``,
  stored as its own CSR tensor (a product with a transposed CSR tensor is slow), with the very
  same values, so the backprojection is the exact transpose of the projection in every dtype
  and on every device (no interpolation mismatch, unlike astra's CUDA projectors);
* values are those of astra's own CPU projectors, so results equal astra's CPU projection up
  to float32 summation order.

Matrices are built lazily and cached per geometry (CPU, float32 values, int32 indices while
they fit) and per (geometry, device, dtype), in a least-recently-used cache bounded by
:data:`CACHE_LIMIT_BYTES`. Float32, float16 and bfloat16 inputs are projected in float32,
float64 inputs in float64.

Memory is about ``16 * nnz`` bytes per device (values and column indices of ``W`` and
``W^T``); ``nnz`` is roughly ``2 * views * N^2`` for parallel beam and ``1.5 * views * N^2``
for fan beam (measured: 10.6 M and 7.8 M at 256^2 and 90 views). :func:`matrix_bytes_estimate`
gives the figure before anything is built; the CT operators use astra's projectors directly
when it exceeds their ``matrix_limit_mib``.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from ._astra import CTGeometry, astra, create_cpu_projector

CACHE_LIMIT_BYTES = 4 << 30
"""Upper bound on the bytes of all cached matrices (CPU and devices together)."""

_NNZ_PER_VIEW_PIXEL = {"parallel": 2.0, "fan": 1.5}  # upper estimates; measured 1.8 and 1.3


def matrix_bytes_estimate(geometry: CTGeometry) -> int:
    """Bytes of ``W`` and ``W^T`` (float32 values, int32 indices) on one device, estimated."""
    nnz = _NNZ_PER_VIEW_PIXEL[geometry.kind] * len(geometry.angles) * geometry.image_size**2
    rows = len(geometry.angles) * geometry.detector_count + geometry.image_size**2
    return int(16 * nnz + 4 * rows)


class _LRU:
    """A byte-bounded least-recently-used cache of ``(A, A^T)`` tensor pairs."""

    def __init__(self, limit: int):
        self.limit = limit
        self._items: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _bytes(pair: tuple[Tensor, Tensor]) -> int:
        return sum(t.crow_indices().nbytes + t.col_indices().nbytes + t.values().nbytes for t in pair)

    def get(self, key: tuple, build) -> tuple[Tensor, Tensor]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        pair = build()
        with self._lock:
            self._items[key] = pair
            self._items.move_to_end(key)
            while len(self._items) > 1 and sum(map(self._bytes, self._items.values())) > self.limit:
                self._items.popitem(last=False)
        return pair

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHE = _LRU(CACHE_LIMIT_BYTES)


def _sparse_csr(crow: Tensor, col: Tensor, values: Tensor, shape) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is not
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=tuple(shape), check_invariants=False)


def _csr(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> Tensor:
    index_dtype = torch.int32 if max(indices.size, *shape) < 2**31 - 1 else torch.int64
    return _sparse_csr(torch.from_numpy(indptr).to(index_dtype), torch.from_numpy(indices).to(index_dtype),
                       torch.from_numpy(values.astype(np.float32)), shape)


def _build_cpu(geometry: CTGeometry) -> tuple[Tensor, Tensor]:
    """``(W, W^T)`` of astra's CPU projector for ``geometry``: float32 CSR tensors on the CPU."""
    vol, proj = geometry.astra_geometries()
    projector = create_cpu_projector(geometry, vol, proj)
    try:
        matrix_id = astra.projector.matrix(projector)
        try:
            w = astra.matrix.get(matrix_id).tocsr()
        finally:
            astra.matrix.delete(matrix_id)
    finally:
        astra.projector.delete(projector)
    w.sum_duplicates()
    w.sort_indices()
    wt = w.T.tocsr()
    wt.sort_indices()
    return _csr(w.indptr, w.indices, w.data, w.shape), _csr(wt.indptr, wt.indices, wt.data, wt.shape)


def system_matrices(geometry: CTGeometry, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``(W, W^T)`` for ``geometry`` as CSR tensors on ``device`` with ``dtype`` values (cached)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    base = _CACHE.get((geometry, "cpu", torch.float32), lambda: _build_cpu(geometry))
    if device.type == "cpu" and dtype == torch.float32:
        return base

    def convert() -> tuple[Tensor, Tensor]:
        return tuple(_sparse_csr(m.crow_indices().to(device), m.col_indices().to(device),
                                 m.values().to(device, dtype), m.shape) for m in base)

    return _CACHE.get((geometry, str(device), dtype), convert)


CPU_CHUNK = 16
"""Slices per sparse product on the CPU: the dense operand of 16 slices stays in cache (measured
at 256^2, 128 slices: 2074 slices/s in chunks of 16, 1094 in one product; 2 cores). On a GPU the
whole batch is one product."""


def _product(matrix: Tensor, items: Tensor) -> Tensor:
    """``matrix @ items^T`` transposed back: ``(B, P) -> (B, M)``."""
    if items.is_cuda or items.shape[0] <= CPU_CHUNK:
        return (matrix @ items.T.contiguous()).T
    return torch.cat([(matrix @ part.T.contiguous()).T for part in items.split(CPU_CHUNK)])


class MatrixProjector:
    """Projection and exact backprojection of one :class:`CTGeometry` through its system matrix.

    Same interface as ``_astra.AstraProjector``: ``project`` maps ``(..., N, N) -> (..., views,
    detectors)`` line integrals in pixel units, ``backproject`` is its exact transpose; both run
    on the input's device and return the input's dtype.
    """

    def __init__(self, geometry: CTGeometry):
        self.geometry = geometry

    def __reduce__(self):
        return MatrixProjector, (self.geometry,)

    def project(self, x: Tensor) -> Tensor:
        g = self.geometry
        return self._apply(x, 0, (len(g.angles), g.detector_count))

    def backproject(self, y: Tensor) -> Tensor:
        g = self.geometry
        return self._apply(y, 1, (g.image_size, g.image_size))

    def _apply(self, data: Tensor, which: int, out_shape: tuple[int, int]) -> Tensor:
        work = torch.float64 if data.dtype == torch.float64 else torch.float32
        matrix = system_matrices(self.geometry, data.device, work)[which]
        items = data.detach().reshape(-1, data.shape[-2] * data.shape[-1]).to(work)
        if items.shape[0] == 0:
            return data.new_zeros((*data.shape[:-2], *out_shape))
        out = _product(matrix, items)
        return out.reshape(*data.shape[:-2], *out_shape).to(data.dtype)
