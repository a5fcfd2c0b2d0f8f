"""Metadata parsing in a forked child: a spinning libhdf5, a crash and errors become one clear InputError."""

import io
import os
import signal
import time

import h5py
import numpy as np
import pytest

from recon.errors import InputError
from recon.io import guard
from recon.io.fastmri import ismrmrd_header, read_fastmri

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the guard forks")


def _vlen_header_file(path, corrupt=False):
    """A fastMRI file whose header is a variable-length string (as h5py writes a ``str``); with
    ``corrupt``, one bit of the header's object size in the global heap is set, which makes
    libhdf5 1.14 loop forever reading it (found by hand; seen again by the reader fuzzer)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("kspace", data=np.ones((1, 2, 8, 8), np.complex64))
        header = ismrmrd_header((8, 8, 1), (4, 8, 1), fov_mm=(220.0, 220.0, 5.0)).decode()
        f.create_dataset("ismrmrd_header", data=header, dtype=h5py.string_dtype())
    data = bytearray(buf.getvalue())
    if corrupt:
        size_at = data.index(b"GCOL") + 24  # signature, version, reserved, collection size, then object 1: index, refcount, reserved, size
        assert int.from_bytes(data[size_at:size_at + 8], "little") == len(header.encode())
        data[size_at] |= 0x40
    path.write_bytes(bytes(data))
    return path


def test_vlen_header_reads_with_its_field_of_view(tmp_path):
    volume = read_fastmri(_vlen_header_file(tmp_path / "ok.h5"))
    assert volume.kspace_shape == (1, 2, 8, 8)
    assert volume.recon_size == (4, 8, 1) and volume.recon_fov_mm == pytest.approx(220.0)


def test_spinning_hdf5_header_is_stopped_with_one_line(tmp_path, monkeypatch):
    path = _vlen_header_file(tmp_path / "spin.h5", corrupt=True)
    monkeypatch.setattr(guard, "METADATA_TIMEOUT_S", 2.0)
    tic = time.monotonic()
    with pytest.raises(InputError) as err:
        read_fastmri(path)
    seconds = time.monotonic() - tic
    message = str(err.value)
    assert message.startswith(str(path)) and "did not finish in 2 s" in message and "\n" not in message
    assert seconds < 10  # the child was killed at the deadline, not waited for


def _crash():
    os.kill(os.getpid(), signal.SIGKILL)  # as a segfault in a C library would end it, without faulthandler's dump


def _raise_input():
    raise InputError("somewhere", "a precise problem")


def _raise_other():
    raise KeyError("two\nlines")


def test_guard_returns_results_and_reports_failures_as_one_line(tmp_path):
    assert guard.guarded(tmp_path, np.arange, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="crashed its reader \\(signal 9"):
        guard.guarded(tmp_path / "f", _crash)
    with pytest.raises(InputError, match="a precise problem") as err:
        guard.guarded(tmp_path / "f", _raise_input)
    assert err.value.path == str(tmp_path / "f")
    with pytest.raises(InputError, match="cannot read the file: KeyError: 'two\\\\nlines'"):
        guard.guarded(tmp_path / "f", _raise_other)
    with pytest.raises(ChildProcessError):  # every child was reaped: no zombies
        os.waitpid(-1, os.WNOHANG)
