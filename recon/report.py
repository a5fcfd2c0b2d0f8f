"""What a run leaves behind: its files (arrays, NIfTI, DICOM series for DICOM input, metrics.json,
config, panel) and its tables.

One table formatter serves ``run`` (one row per method), ``bench`` and the benchmark scripts
(mean ± sd over cases): columns are declared once (:data:`SCORES`), and the optional ones
(z-PSNR for volumes, noise error under structured noise) appear when every row has them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .config import job_config
from .engine import Outcome
from .errors import ConfigError

__all__ = ["Column", "SCORES", "format_table", "magnitude", "measurement_display", "prepare_run_dir", "write_run"]


@dataclass(frozen=True)
class Column:
    """A table column: the metric ``key``, its ``header`` and format ``spec``; ``how`` a method's
    rows (one per case) become a cell: ``mean_sd`` (``mean ± sd``; the value alone for one row),
    ``mean``, ``max``, ``first`` or ``count``; ``optional`` columns appear only when every row has
    the key. Missing values print as ``n/a``."""

    key: str
    header: str
    spec: str = ".2f"
    how: str = "mean_sd"
    optional: bool = False

    def cell(self, rows: Sequence[dict[str, Any]]) -> str:
        if self.how == "count":
            return str(len(rows))
        values = [r.get(self.key) for r in rows]
        if self.how == "first" or any(v is None for v in values):
            present = [v for v in values if v is not None]
            if not present:
                return "n/a"
            values = present if self.how != "first" else [values[0]]
        if self.how == "first":
            return format(values[0], self.spec)
        if self.how == "max":
            return format(max(values), self.spec)
        mean = statistics.mean(values)
        if self.how == "mean" or len(values) == 1:
            return format(mean, self.spec)
        return f"{format(mean, self.spec)} ± {format(statistics.stdev(values), self.spec)}"


SCORES = (Column("psnr", "PSNR [dB]"), Column("ssim", "SSIM", ".4f"),
          Column("ssim_object", "SSIM (object)", ".4f", optional=True), Column("nmse", "NMSE", ".2e"),
          Column("z_psnr", "z-PSNR [dB]", optional=True), Column("noise_error", "noise error", ".3f", optional=True))
RUN_COLUMNS = (*SCORES, Column("seconds", "seconds"), Column("nfe", "NFE", "d", "first"))


def format_table(rows: dict[str, Sequence[dict[str, Any]]], columns: Sequence[Column] = RUN_COLUMNS, *,
                 markdown: bool = False, label: str = "method") -> str:
    """A table of ``rows`` (method -> one metrics dict per case): plain text aligned in columns,
    or Markdown. Optional columns missing from any row are left out."""
    shown = [c for c in columns if not c.optional or all(c.key in r for rs in rows.values() for r in rs)]
    table = [[label, *(c.header for c in shown)]] + [[name, *(c.cell(rs) for c in shown)] for name, rs in rows.items()]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join([lines[0], "|" + " --- |" * len(table[0]), *lines[1:]])
    widths = [max(len(row[i]) for row in table) + (0 if i == 0 else 2) for i in range(len(table[0]))]
    return "\n".join(row[0].ljust(max(widths[0], 16)) + "".join(v.rjust(w) for v, w in zip(row[1:], widths[1:]))
                     for row in table)


def magnitude(image: np.ndarray) -> np.ndarray:
    """``|image|`` for complex images (MRI); real images (CT) unchanged."""
    return np.abs(image) if np.iscomplexobj(image) else image


def measurement_display(y: np.ndarray) -> np.ndarray:
    """What the panel shows of a 2D measurement: for complex k-space the log-magnitude
    ``log10(1 + |y| / floor)`` (floor 1e-6 of the maximum; unsampled entries are 0), the data
    itself otherwise (sinograms)."""
    if not np.iscomplexobj(y):
        return y
    mag = np.abs(y)
    return np.log10(1 + mag / (1e-6 * (float(mag.max()) or 1.0)))


def prepare_run_dir(path: Path) -> Path:
    """Create the run folder; refuse one that already holds files (nothing is overwritten)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path}: run folder already exists and is not empty; choose another hydra.run.dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run(run_dir: Path, cfg: DictConfig, outcome: Outcome) -> dict[str, Any]:
    """Write a run's files into ``run_dir`` (README: "The run folder"); returns the ``metrics.json``
    content."""
    from .io.atomic import save_json, save_npy
    from .io.bart_run import BART_FOLDER, write_bart_run
    from .io.dicom_write import write_dicom_series
    from .io.images import save_nifti
    from .panel import save_panel, save_volume_panel

    case, results, noises = outcome.case, outcome.results, outcome.noises
    source, truth, y = case.source, case.truth, case.y
    thickness_cm = getattr(source, "slice_thickness_cm", None) or source.pixel_size_cm
    spacing_mm = (10 * source.pixel_size_cm, 10 * source.pixel_size_cm, 10 * thickness_cm)
    truth_np = truth.cpu().numpy()
    dicom = getattr(source, "dicom", None)  # the source's DICOM geometry: results go back as DICOM series too
    save_npy(run_dir / "ground_truth.npy", truth_np)
    save_npy(run_dir / "measurement.npy", y.cpu().numpy())
    for name, res in results.items():
        image = res.image.cpu().numpy()
        save_npy(run_dir / f"recon_{name}.npy", image)
        save_nifti(run_dir / f"recon_{name}.nii.gz", magnitude(image[0, 0]), spacing=spacing_mm)
        if dicom is not None:
            write_dicom_series(run_dir / f"recon_{name}_dicom", magnitude(image[0, 0]), geometry=dicom,
                               description=f"recon {cfg.task.name} {name}")
        if res.std is not None:
            save_npy(run_dir / f"std_{name}.npy", res.std.cpu().numpy())
            save_npy(run_dir / f"samples_{name}.npy", res.samples.cpu().numpy())
            save_nifti(run_dir / f"std_{name}.nii.gz", res.std[0, 0].cpu().numpy(), spacing=spacing_mm)
    if truth.dim() == 5:
        save_nifti(run_dir / "ground_truth.nii.gz", truth_np[0, 0], spacing=spacing_mm)
    if case.structured_noise is not None:
        save_npy(run_dir / "noise_truth.npy", case.structured_noise.cpu().numpy())
        for name, estimate in noises.items():
            save_npy(run_dir / f"noise_{name}.npy", estimate.cpu().numpy())
    write_bart_run(run_dir / BART_FOLDER, case.physics, y, truth, {n: r.image for n, r in results.items()})  # MRI only
    report = {
        "task": str(cfg.task.name),
        "data": source.name,
        "units": source.units,
        "data_range": float(magnitude(truth_np).max()),
        "methods": {name: res.metrics for name, res in results.items()},
    }
    save_json(run_dir / "metrics.json", report)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(job_config(cfg)))
    title = f"{cfg.task.name}: {source.name}"
    if truth.dim() == 5:
        save_volume_panel(run_dir / "panel.png", truth_np[0, 0],
                          {n: r.image[0, 0].cpu().numpy() for n, r in results.items()}, report["methods"],
                          aspect=thickness_cm / source.pixel_size_cm, title=title)
    else:
        save_panel(run_dir / "panel.png", magnitude(truth_np[0, 0]),
                   {n: magnitude(r.image[0, 0].cpu().numpy()) for n, r in results.items()},
                   report["methods"], title=title, measurement=measurement_display(y[0, 0].cpu().numpy()),
                   stds={n: r.std[0, 0].cpu().numpy() for n, r in results.items() if r.std is not None},
                   noise_truth=None if case.structured_noise is None else case.structured_noise[0, 0].cpu().numpy(),
                   noises={n: e[0, 0].cpu().numpy() for n, e in noises.items()})
    return report
