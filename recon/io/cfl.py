"""Read and write BART ``.cfl``/``.hdr`` array pairs, and convert recon's MRI layouts to BART's.

File format (BART's documentation, "Data Format"): an array ``NAME`` is two files. ``NAME.hdr``
is text whose first line is ``# Dimensions`` and whose second line holds the dimensions as
space-separated positive integers (BART writes 16, padded with 1s; later ``#`` lines are comments
and are ignored). ``NAME.cfl`` holds the values as little-endian complex64 (float32 real, float32
imaginary, interleaved) in column-major (Fortran) order: the first dimension varies fastest.

Layout mapping (chosen so that ``bart fft 3`` over BART dims 0 and 1 is recon's 2D FFT over
``(H, W)``, see :func:`operators.mri.fft2c`):

* coil k-space / coil maps: recon ``(C, H, W)`` <-> BART ``(H, W, 1, C)``,
  ``bart[h, w, 0, c] = recon[c, h, w]`` (BART dim 0 = recon rows, dim 1 = columns, dim 3 = coils);
* images: recon ``(H, W)`` <-> BART ``(H, W)``;
* non-Cartesian k-space: recon ``(C, spokes, samples)`` <-> BART ``(1, samples, spokes, C)``;
* trajectories: recon real ``(spokes, samples, 2)`` of ``(k_y, k_x)`` in radians per pixel,
  ``[-pi, pi]`` (:mod:`operators.nufft`) <-> BART complex ``(3, samples, spokes)`` in pixel units
  (``[-N/2, N/2]``), coordinate 0 along BART dim 0 (= H), 1 along dim 1 (= W), 2 zero:
  ``k_pixel = k_rad * N / (2 pi)`` with ``N = H`` for ``k_y`` and ``N = W`` for ``k_x``.

``to_bart_*`` return numpy complex64 arrays ready for :func:`write_cfl`; ``from_bart_*`` accept
what :func:`read_cfl` returns (trailing 1s dropped or not) and return torch tensors.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from operators.nufft import check_trajectory

from ..errors import InputError
from .atomic import atomic_write

__all__ = ["MAX_DIMS", "from_bart_coils", "from_bart_image", "kspace_from_bart_noncart",
           "kspace_to_bart_noncart", "read_cfl", "to_bart_coils", "to_bart_image",
           "trajectory_from_bart", "trajectory_to_bart", "write_cfl"]

MAX_DIMS = 16  # BART's DIMS: the number of dimensions it writes and the most it accepts
_HEADER = "# Dimensions"
_SAMPLE = np.dtype("<c8")  # little-endian complex64, 8 bytes a value


def _paths(base: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(NAME.hdr, NAME.cfl)`` for ``base`` given as ``NAME``, ``NAME.cfl`` or ``NAME.hdr``."""
    path = Path(base)
    if path.suffix in (".cfl", ".hdr"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".hdr"), path.with_name(path.name + ".cfl")


def _read_dims(hdr: Path) -> tuple[int, ...]:
    try:
        lines = hdr.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError:
        raise InputError(hdr, "is not a BART header (not ASCII text)") from None
    if not lines or lines[0].strip() != _HEADER:
        raise InputError(hdr, f"is not a BART header: the first line must be {_HEADER!r}")
    words = lines[1].split() if len(lines) > 1 else []
    if not words:
        raise InputError(hdr, f"has no dimensions on the line after {_HEADER!r}")
    dims = []
    for word in words:
        try:
            dims.append(int(word))
        except ValueError:
            raise InputError(hdr, f"dimension {word!r} is not an integer") from None
        if dims[-1] < 1:
            raise InputError(hdr, f"dimension {dims[-1]} is not positive")
    return tuple(dims)


def read_cfl(base: str | os.PathLike[str], *, squeeze: bool = True) -> np.ndarray:
    """Read the BART array ``base`` (``.cfl``/``.hdr`` suffix optional) as complex64.

    The shape is the header's dims with trailing 1s dropped (at least one dim kept), or exactly
    as written with ``squeeze=False``. The array is Fortran-ordered (BART's memory order, no copy
    beyond the read). Raises InputError for a missing file, a bad header, or a ``.cfl`` whose size
    is not 8 bytes times the number of values.
    """
    hdr, cfl = _paths(base)
    for path in (hdr, cfl):
        if not path.is_file():
            raise InputError(path, "not found (a BART array needs both NAME.hdr and NAME.cfl)")
    dims = _read_dims(hdr)
    count = math.prod(dims)
    size = cfl.stat().st_size
    if size != count * _SAMPLE.itemsize:
        raise InputError(cfl, f"holds {size} bytes but its header's dims {list(dims)} need "
                              f"8 * {count} = {count * _SAMPLE.itemsize} bytes")
    data = np.fromfile(cfl, dtype=_SAMPLE, count=count).astype(np.complex64, copy=False)
    if squeeze:
        while len(dims) > 1 and dims[-1] == 1:
            dims = dims[:-1]
    return data.reshape(dims, order="F")


def _to_numpy(array: Any) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.detach().cpu().resolve_conj().resolve_neg().numpy()
    out = np.asarray(array)
    if not (np.issubdtype(out.dtype, np.number) or out.dtype == np.bool_):
        raise TypeError(f"need a numeric array, got dtype {out.dtype}")
    return out


def write_cfl(base: str | os.PathLike[str], array: Any, *, overwrite: bool = False) -> None:
    """Write ``array`` (numpy array or torch tensor, real or complex, at most 16 dims) as the
    BART pair ``base.hdr``/``base.cfl`` in complex64, each file atomically (the ``.cfl`` first).

    Existing files are kept, with an InputError naming the first one, unless ``overwrite=True``.
    A 0-d array is written with dims ``[1]``; the header is padded to 16 dims with 1s.
    """
    hdr, cfl = _paths(base)
    data = _to_numpy(array)
    if data.ndim > MAX_DIMS:
        raise InputError(cfl, f"array has {data.ndim} dims {list(data.shape)}; BART allows at "
                              f"most {MAX_DIMS}")
    if 0 in data.shape:
        raise InputError(cfl, f"array has an empty dimension {list(data.shape)}; BART needs >= 1")
    if not overwrite:
        for path in (hdr, cfl):
            if path.exists():
                raise InputError(path, "already exists; pass overwrite=True to replace it")
    dims = list(data.shape) + [1] * (MAX_DIMS - data.ndim)
    # The transpose of a Fortran-ordered array is C-contiguous: its buffer is BART's byte order.
    values = np.asfortranarray(data, dtype=_SAMPLE).T
    with atomic_write(cfl, "wb") as handle:
        handle.write(values.reshape(-1).view(np.uint8))
    with atomic_write(hdr, "w") as handle:
        handle.write(f"{_HEADER}\n{' '.join(str(d) for d in dims)}\n")


def _fit(array: Any, ndim: int, what: str, size_one: tuple[int, ...] = ()) -> np.ndarray:
    """``array`` as complex64 with exactly ``ndim`` dims: trailing 1s are added or dropped; dims
    beyond ``ndim`` and those listed in ``size_one`` must be 1 (else ValueError naming ``what``)."""
    data = _to_numpy(array)
    shape = tuple(data.shape)
    extra = shape[ndim:]
    padded = shape[:ndim] + (1,) * (ndim - len(shape))
    if any(d != 1 for d in extra) or any(padded[i] != 1 for i in size_one):
        must = sorted(set(size_one) | set(range(ndim, max(ndim, len(shape)))))
        raise ValueError(f"{what}: BART dims {must} must have size 1, got shape {list(shape)}")
    return data.reshape(padded).astype(np.complex64, copy=False)


def to_bart_coils(x: Any) -> np.ndarray:
    """Recon coil k-space or coil maps ``(C, H, W)`` -> BART ``(H, W, 1, C)`` complex64."""
    data = _to_numpy(x)
    if data.ndim != 3:
        raise ValueError(f"coils: need (C, H, W), got shape {list(data.shape)}")
    return np.ascontiguousarray(data.transpose(1, 2, 0)[:, :, None, :], dtype=np.complex64)


def from_bart_coils(a: Any) -> Tensor:
    """BART ``(H, W, 1, C)`` (one map, one slice) -> recon complex64 tensor ``(C, H, W)``."""
    data = _fit(a, 4, "coils", size_one=(2,))
    return torch.from_numpy(np.ascontiguousarray(data[:, :, 0, :].transpose(2, 0, 1)))


def to_bart_image(x: Any) -> np.ndarray:
    """Recon image ``(H, W)`` -> BART ``(H, W)`` complex64 (the same index order)."""
    data = _to_numpy(x)
    if data.ndim != 2:
        raise ValueError(f"image: need (H, W), got shape {list(data.shape)}")
    return np.ascontiguousarray(data, dtype=np.complex64)


def from_bart_image(a: Any) -> Tensor:
    """BART ``(H, W[, 1, ...])`` -> recon complex64 tensor ``(H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(_fit(a, 2, "image")))


def kspace_to_bart_noncart(x: Any) -> np.ndarray:
    """Recon non-Cartesian k-space ``(C, spokes, samples)`` -> BART ``(1, samples, spokes, C)``."""
    data = _to_numpy(x)
    if data.ndim != 3:
        raise ValueError(f"non-Cartesian k-space: need (C, spokes, samples), got {list(data.shape)}")
    return np.ascontiguousarray(data.transpose(2, 1, 0)[None], dtype=np.complex64)


def kspace_from_bart_noncart(a: Any) -> Tensor:
    """BART ``(1, samples, spokes, C)`` -> recon complex64 tensor ``(C, spokes, samples)``."""
    data = _fit(a, 4, "non-Cartesian k-space", size_one=(0,))
    return torch.from_numpy(np.ascontiguousarray(data[0].transpose(2, 1, 0)))


def _pixels_per_radian(shape: tuple[int, int]) -> np.ndarray:
    height, width = (int(n) for n in shape)
    if height < 1 or width < 1:
        raise ValueError(f"shape must be two positive sizes (H, W), got {shape}")
    return np.array([height, width], dtype=np.float64) / (2 * math.pi)


def trajectory_to_bart(traj_rad: Any, shape: tuple[int, int]) -> np.ndarray:
    """Recon trajectory ``(spokes, samples, 2)`` of ``(k_y, k_x)`` radians in ``[-pi, pi]`` ->
    BART ``(3, samples, spokes)`` complex64 in pixels: ``k_pixel = k_rad * N / (2 pi)``, N = H for
    ``k_y`` (BART coordinate 0), W for ``k_x`` (coordinate 1); coordinate 2 is 0."""
    traj = check_trajectory(traj_rad).detach().cpu().numpy().astype(np.float64)
    if traj.ndim != 3:
        raise ValueError(f"trajectory: need (spokes, samples, 2), got shape {list(traj.shape)}")
    pixels = (traj * _pixels_per_radian(shape)).transpose(2, 1, 0)
    out = np.zeros((3,) + pixels.shape[1:], dtype=np.complex64)
    out[:2] = pixels
    return out


def trajectory_from_bart(a: Any, shape: tuple[int, int]) -> Tensor:
    """BART trajectory ``(3, samples, spokes)`` in pixels -> recon float32 tensor ``(spokes,
    samples, 2)`` of ``(k_y, k_x)`` radians: ``k_rad = 2 pi k_pixel / N`` (N = H, then W).

    ValueError when the trajectory is 3D (coordinate 2 not zero), has an imaginary part, or lands
    outside ``[-pi, pi]`` (the message names the largest ``|k|``: a wrong ``shape``, most often).
    """
    data = _fit(a, 3, "trajectory")
    if data.shape[0] != 3:
        raise ValueError(f"trajectory: BART dim 0 must be 3 coordinates, got shape {list(data.shape)}")
    if np.any(data.imag != 0):
        raise ValueError("trajectory: BART coordinates must be real (zero imaginary part)")
    if np.any(data[2].real != 0):
        raise ValueError("trajectory: coordinate 2 (k_z) is not zero; recon trajectories are 2D")
    pixels = data[:2].real.astype(np.float64).transpose(2, 1, 0)  # (spokes, samples, 2)
    radians = pixels / _pixels_per_radian(shape)
    return check_trajectory(torch.from_numpy(radians.astype(np.float32)), "trajectory")
