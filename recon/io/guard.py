"""Run a small file-parsing step in a forked child with a deadline, so a corrupt file that makes a C library spin or crash becomes one clear error."""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import InputError

__all__ = ["METADATA_TIMEOUT_S", "guarded"]

METADATA_TIMEOUT_S = 10.0  # a local file's metadata parses in milliseconds; a network file system in well under this
T = TypeVar("T")


def guarded(path: object, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
    """``fn(*args)`` computed in a forked child and returned here (pickled through a pipe).

    Why: libhdf5 spins forever on some corrupted variable-length strings (the global heap of an
    ``ismrmrd_header``) and holds the GIL while it does, so neither a thread nor a signal can stop
    it; a child process can be killed. An :class:`InputError` raised by ``fn`` is re-raised as is;
    a child that runs past ``timeout`` s (default :data:`METADATA_TIMEOUT_S`) is killed and one that dies without an answer (a segfault
    in the C library) becomes an InputError naming ``path``. Where ``os.fork`` does not exist
    (Windows) ``fn`` runs here, unguarded. ``fn``'s result must be picklable and small.
    """
    if not hasattr(os, "fork") or os.environ.get("RECON_NO_FORK_GUARD") == "1":
        return fn(*args)
    timeout = METADATA_TIMEOUT_S if timeout is None else timeout
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking a threaded process; the child only parses and exits
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into the caller's stack
        code = 0
        try:
            os.close(read_fd)
            try:
                answer: tuple[str, Any] = ("ok", fn(*args))
            except InputError as exc:
                answer = ("input", exc.problem)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
                answer = ("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            data = pickle.dumps(answer)
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]
        except BaseException:  # noqa: BLE001 - nothing may escape the child
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        data = _read_until(read_fd, pid, timeout)
    finally:
        os.close(read_fd)
    if data is None:
        _reap(pid, kill=True)
        raise InputError(path, f"reading the file's metadata did not finish in {timeout:g} s (corrupt file?)")
    status = _reap(pid, kill=False)
    if not data:
        reason = f"signal {-status}" if status < 0 else f"status {status}"
        raise InputError(path, f"the file's metadata crashed its reader ({reason}; corrupt file?)")
    kind, value = pickle.loads(data)
    if kind == "ok":
        return value
    if kind == "input":
        raise InputError(path, value)
    raise InputError(path, f"cannot read the file: {value}")


def _read_until(fd: int, pid: int, timeout: float) -> bytes | None:
    """Everything the child writes to ``fd`` until it closes it; None past ``timeout`` s."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            ready, _, _ = select.select([fd], [], [], left)
        except InterruptedError:  # pragma: no cover - retried (PEP 475 does this on 3.5+)
            continue
        if not ready:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int, kill: bool) -> int:
    """Wait for the child (SIGKILLing it first if ``kill``); its exit status, negative for a signal."""
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it just exited
            pass
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

