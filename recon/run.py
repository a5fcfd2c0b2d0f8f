"""``python -m recon run``: simulate a measurement of one image, reconstruct it with every method, report.

The engine (:class:`recon.engine.Engine`) does the work; this command prepares the run folder
(new or empty: nothing is overwritten), writes the files (:func:`recon.report.write_run`) and
prints the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .engine import Engine
from .report import format_table, prepare_run_dir, write_run


def run(cfg: DictConfig) -> dict[str, Any]:
    """Execute a single-image run as configured; returns the ``metrics.json`` content."""
    engine = Engine(cfg)  # every config or input error surfaces here, before a run folder exists
    run_dir = prepare_run_dir(Path(cfg.hydra.run.dir))
    report = write_run(run_dir, cfg, engine.run())
    print(format_table({name: [m] for name, m in report["methods"].items()}))
    print(f"run folder: {run_dir}")
    return report
