"""Measure one block of work: seconds with the device's queue drained, and peak memory above its start."""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .allocator import bytes_in_use

__all__ = ["PeakMemory", "machine_description", "synchronize", "timed"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. Brackets every timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory above the start of the block, MiB (``peak_mib``, ``None`` where unmeasurable).

    On CUDA: the allocator's own peak (exact). On the CPU: the largest reading of ``read``
    (default :func:`_cpu_memory`, bytes) taken at entry, every ``period`` seconds by a thread,
    and once more at exit; an allocation freed between two readings may be missed, so the CPU
    figure is a lower bound. ``samples`` counts the thread's readings (and :meth:`sample`'s),
    so a caller can tell that the sampler has seen a given moment.
    """

    def __init__(self, device: torch.device, read: Callable[[], int | None] | None = None,
                 period: float = 0.005):
        self.device = device
        self.peak_mib: float | None = None
        self.samples = 0
        self._read = read or _cpu_memory
        self._period = period
        self._lock = threading.Lock()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif (base := self._read()) is not None:
            self._base = self._peak = base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
            self._thread.start()
        return self

    def sample(self) -> None:
        """Take one CPU reading now (bytes) into the peak; the count rises after the reading."""
        with self._lock:
            self._peak = max(self._peak, self._read())
            self.samples += 1

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self._period):
            self.sample()

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.sample()  # what is still held at exit counts, however short the block
            self.peak_mib = (self._peak - self._base) / 2**20


def _cpu_memory() -> int | None:
    """Bytes held through ``malloc`` (glibc), else the resident set size (Linux), else ``None``."""
    in_use = bytes_in_use()
    if in_use is not None:
        return in_use
    if not Path("/proc/self/statm").is_file():
        return None
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of ``fn()``, with the device's queued work finished before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def machine_description(device: torch.device) -> str:
    """CPU, cores, threads, torch version, and the GPU's name when the device is CUDA."""
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}{gpu}")
