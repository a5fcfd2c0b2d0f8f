"""One writer per output folder: an OS file lock that the OS releases when its process dies.

:func:`output_lock` takes a non-blocking exclusive lock on ``FOLDER/.recon-batch.lock``
(``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) and writes the holder's pid into it.
A second process asking for the same folder gets :class:`~recon.errors.ReconError` at once,
naming the holder's pid. The OS drops the lock when the holder exits or is killed, so a
killed batch never leaves a stale lock (a leftover lock file is simply locked again). On a
clean release the lock file is removed; a process that locked a file which was removed and
replaced meanwhile notices (different inode) and locks the new one instead, so two processes
never both believe they hold the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ReconError

LOCK_NAME = ".recon-batch.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    try:
        import msvcrt
    except ImportError:  # neither: no locking, see _try_lock
        msvcrt = None  # type: ignore[assignment]


class FolderBusy(ReconError):
    """Another process holds the folder's lock."""


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting; False if another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        return True
    if msvcrt is not None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    return True  # no OS locking on this platform: concurrent batches are not detected


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextmanager
def output_lock(folder: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block (the folder is created if needed).

    Raises :class:`FolderBusy` (one line naming ``what=folder`` and the holder's pid) if another
    process holds it, or naming the OS's reason if the folder cannot be created or written; nothing
    else in the folder is touched then.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise FolderBusy(f"{what}={folder}: cannot write here ({err.strerror or err})") from None
        if not _try_lock(fd):
            os.close(fd)
            raise FolderBusy(f"{what}={folder}: another recon batch (pid {_holder(path)}) is writing here; "
                             "wait for it or choose another output")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed this file as we locked it: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        try:
            path.unlink()  # before the unlock: a waiter on this inode then sees it is stale
        except OSError:
            pass
        os.close(fd)
