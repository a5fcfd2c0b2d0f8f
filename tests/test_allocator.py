"""The CPU allocator setting: freed large tensors stay in the process's heap for reuse."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import sys, torch
from recon.allocator import malloc_info, reuse_freed_memory

if sys.argv[1] == "reuse":
    assert reuse_freed_memory() is True
block = torch.ones(64 * 2**20 // 4)  # 64 MiB
held = malloc_info()
del block
freed = malloc_info()
print(held.hblkhd >> 20, freed.fordblks >> 20)  # MiB mmapped while held, MiB free in the heap after
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting applies to glibc only")
def test_freed_activations_stay_in_the_heap_for_reuse():
    def probe(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        mmapped, free_in_heap = out.stdout.split()
        return int(mmapped), int(free_in_heap)

    mmapped, free_in_heap = probe("system")
    assert mmapped >= 64 and free_in_heap < 64  # glibc's default: mmapped, returned to the kernel on free
    mmapped, free_in_heap = probe("reuse")
    assert mmapped < 64 and free_in_heap >= 64  # served from the heap and kept there after the free
