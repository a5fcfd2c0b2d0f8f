"""Shared fixtures, and the ``cuda`` marker: tests that need a CUDA GPU carry
``@pytest.mark.cuda`` and skip without one (``pytest -m cuda`` selects them on a GPU machine;
``benchmarks/device_run.sh`` runs them there)."""

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or os.environ.get("RECON_GPU_TEST_DEVICE"):  # see tests/test_gpu.py
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here); benchmarks/device_run.sh runs it on one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny tensors: extra threads only add contention on a shared machine (opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
