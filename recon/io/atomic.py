"""Atomic ``.npy`` and JSON writes for recon, on the one atomic writer :mod:`priors.atomic`.

A reader never sees a half-written file, and an error leaves the previous file (if any) intact;
written files get the permissions a plain ``open()`` gives. :func:`atomic_write` and
:func:`write_atomic` are :mod:`priors.atomic`'s, re-exported here for recon's modules.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from priors.atomic import atomic_write, write_atomic

__all__ = ["atomic_write", "save_json", "save_npy", "write_atomic"]


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` to ``path`` in ``.npy`` format, atomically."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (with a trailing newline) to ``path``, atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")
