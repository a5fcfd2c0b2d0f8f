"""User-facing errors: one clear line naming the file or key and the problem."""

from __future__ import annotations


class ReconError(Exception):
    """An error the user can fix (bad input, bad config); printed as one line, no traceback."""


class InputError(ReconError):
    """A data file is missing, unreadable, of the wrong shape, or holds NaN/Inf.

    The message starts with the offending path: ``"FILE: problem"``.
    """

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(ReconError):
    """A configuration key or override is unknown or has an invalid value."""
