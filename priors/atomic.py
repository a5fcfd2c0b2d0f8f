"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``.

A reader never sees a half-written file, and an error leaves the previous file (if any)
intact. Written files get the permissions a plain ``open(path, "w")`` would give them: the
temporary file is created with mode ``0o666`` and the OS applies the process umask (and any
default ACL) itself. The umask is never read or set, so importing or calling this module has
no process-wide side effect. This is the project's one atomic writer (``recon.io.atomic``
builds on it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "write_atomic"]

# Create-only (never follow or reuse an existing name), close on exec, binary on Windows.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_TRIES = 100


def _create_temporary(target: Path) -> tuple[int, Path]:
    """A new file ``.NAME.<random>.tmp`` beside ``target``, opened for writing; ``(fd, path)``.

    Mode ``0o666`` before the OS masks it with the umask: the permissions ``open()`` gives.
    """
    for _ in range(_TRIES):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name} after {_TRIES} tries")


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8). The parent folder is created if needed. The
    data is flushed and fsynced before the replace. On an exception the temporary file is
    removed and ``path`` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(target)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(target: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``target`` atomically (see :func:`atomic_write`)."""
    with atomic_write(target, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
