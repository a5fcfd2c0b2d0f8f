"""CPU memory allocator settings for sampling: keep freed activation buffers for reuse.

A diffusion sampler on the CPU allocates and frees the same large activations (tens of MiB at
batch 8 and 128 x 128) at every network evaluation. glibc's ``malloc`` serves such blocks with
``mmap`` and returns them to the kernel on ``free``, so every step page-faults its activations
back in, zero-filled. The cost grows with the batch: measured on DDS-20 over 8 CT slices of
128 x 128 on 2 cores, 12.2 s with glibc's defaults against 9.0 s with the settings below (one
slice: 1.45 s either way); the element-wise layers (GroupNorm, SiLU, residual adds) took 2-3x
less time. ``benchmarks/batching.py`` measures both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (bytes): ``uordblks`` in use in the heap, ``fordblks`` free
    in it, ``hblkhd`` in separately mmapped blocks."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once (``malloc_info`` is sampled every few milliseconds)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = MallInfo2
    return libc


def malloc_info() -> MallInfo2 | None:
    """glibc's allocation statistics over all arenas (``mallinfo2``, glibc >= 2.33), or ``None``."""
    fn = getattr(_libc(), "mallinfo2", None)
    return None if fn is None else fn()


def bytes_in_use() -> int | None:
    """Bytes the process holds through ``malloc`` right now (heap and mmapped), or ``None``
    where glibc's ``mallinfo2`` is missing. Unlike the resident set, it falls when memory is
    freed even if the allocator keeps the pages."""
    info = malloc_info()
    return None if info is None else int(info.uordblks + info.hblkhd)


def reuse_freed_memory() -> bool:
    """Tell glibc to serve every allocation from its heap and never trim it.

    Freed blocks stay in the process for the next step instead of going back to the kernel;
    the resident set stays at its peak instead of shrinking between steps (the peak itself is
    unchanged). Process-wide and irreversible: the command line calls it (:func:`recon.app.cli`; opt out with
    ``RECON_CPU_ALLOCATOR=system``), library calls never do; a library
    user may call it once before sampling. Returns ``False`` (and changes nothing) where the C
    library is not glibc (macOS, Windows, musl).
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
