"""The vocabulary the stages of ``benchmarks/device_run.py`` are written in: a :class:`Stage` builds
its :class:`Step` subprocesses from a :class:`Context` and collects their results, plus the helpers
several stages share (finding a step's record, reading a JSON it printed or wrote, merging Hydra
overrides)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Step:
    """One subprocess of a stage."""

    name: str
    argv: list[str]
    timeout_s: float | None = None   # this step's own cap (inside the stage's)
    gpu_only: bool = False           # --smoke: recorded as skipped, "no GPU"
    required: bool = True            # a failure skips the stage's remaining steps
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    name: str
    summary: str
    cap_s: float                     # GPU run; --smoke uses smoke_cap_s
    min_s: float                     # skipped ("time budget") when less than this is left
    build: Callable[["Context"], list[Step]]
    collect: Callable[["Context", dict[str, Any]], dict[str, Any]] | None = None
    default: bool = True
    smoke_cap_s: float = 90.0
    reserve_s: float = 0.0           # GPU run: kept free for this stage by the stages before it


@dataclass
class Context:
    smoke: bool
    python: str
    tmp: Path
    out: Path
    train_minutes: float
    records: dict[str, dict[str, Any]]
    stage_timeout_s: float = 0.0     # the time the current stage may take (set before build)

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    def dir(self, name: str) -> Path:
        """A fresh (not yet existing) folder under the run's temporary root."""
        return self.tmp / name

    def recon(self, *args: str) -> list[str]:
        return [self.python, "-m", "recon", *args]


def step_record(rec: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The record of the step called ``name`` in a stage's record ``rec`` (None if it has none)."""
    return next((s for s in rec.get("steps", []) if s["name"] == name), None)


def printed_json(rec: dict[str, Any], name: str, prefix: str) -> Any:
    """The JSON the step ``name`` printed on a line starting with ``prefix`` (the last such line), or
    None where it printed none."""
    found = None
    for line in (step_record(rec, name) or {}).get("output", "").splitlines():
        if line.startswith(prefix):
            found = json.loads(line[len(prefix):])
    return found


def read_json(path: Path, what: str) -> Any:
    """The JSON file a step wrote; raises (the stage's collect error) where ``what`` wrote none."""
    if not path.is_file():
        raise RuntimeError(f"{what} wrote no {path.name}")
    return json.loads(path.read_text())


def merge(overrides: list[str], changes: list[str]) -> list[str]:
    """``overrides`` with each ``key=value`` of ``changes`` replacing the same key's, or appended."""
    out = list(overrides)
    for change in changes:
        key = change.split("=", 1)[0]
        at = next((i for i, o in enumerate(out) if o.split("=", 1)[0] == key), None)
        if at is None:
            out.append(change)
        else:
            out[at] = change
    return out
