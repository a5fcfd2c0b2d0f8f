"""``python -m recon bench``: every task x method on held-out cases, appended to the results file.

For each task in ``tasks`` and each case ``i < count`` (``data.index=i seed=i`` plus every
command-line override that is not one of bench's own keys), the task's own methods run as in ``python -m recon run``; per method the table
gets PSNR and SSIM (mean ± sd over the cases), seconds per slice, NFE, peak memory and the
device. Peak memory is the CUDA allocator's peak on a GPU. On the CPU it is the peak of the
bytes held through ``malloc`` above the start of the method, sampled every 5 ms (glibc's
``mallinfo2``; an allocation held for less than that may be missed); without glibc, the growth of the resident set (Linux ``/proc``; ``n/a``
elsewhere), a lower bound, because memory freed earlier is reused without growth. A Markdown
section headed with the date, the machine and the command is appended to ``results``
(atomically), and a PSNR-versus-seconds plot per task is written to ``plots``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .allocator import bytes_in_use
from .config import load_config
from .errors import ConfigError
from .io.atomic import atomic_write
from .measure import machine_description
from .build import resolve_device
from .engine import Engine
from .report import SCORES, Column, format_table

__all__ = ["BENCH_KEYS", "bench"]

BENCH_KEYS = ("tasks", "count", "results", "plots")


def task_config(task: str, index: int, overrides: list[str]) -> DictConfig:
    """Case ``index`` of ``task`` with ``overrides``; an override the task cannot take (one meant
    for other tasks' methods) is an error naming the task."""
    try:
        return load_config([f"task={task}", f"data.index={index}", f"seed={index}", *overrides])
    except ConfigError as err:
        raise ConfigError(f"task {task}: {err}") from None


def bench_task(task: str, count: int, overrides: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per method (named ``name-NFE`` for samplers): one metrics row per case, with its seconds
    per slice, peak memory and device."""
    rows: dict[str, list[dict[str, Any]]] = {}
    methods: dict[str, Any] = {}
    for index in range(count):
        cfg = task_config(task, index, overrides)
        engine = Engine(cfg, methods or None)  # methods built once per task: cases differ in data only
        methods, device = engine.methods, engine.device
        outcome = engine.run(measure_memory=True)
        slices = outcome.case.truth.shape[2] if outcome.case.truth.dim() == 5 else 1
        for name, result in outcome.results.items():
            metrics = dict(result.metrics, seconds_per_slice=result.metrics["seconds"] / slices, device=str(device))
            rows.setdefault(name if metrics["nfe"] == 0 else f"{name}-{metrics['nfe']}", []).append(metrics)
    return rows


_SCORE = {column.key: column for column in SCORES}
BENCH_COLUMNS = (Column("cases", "cases", how="count"), *(_SCORE[k] for k in ("psnr", "ssim", "ssim_object", "z_psnr")),
                 Column("seconds_per_slice", "seconds/slice", how="mean"), Column("nfe", "NFE", "d", "first"),
                 Column("peak_mib", "peak memory [MiB]", ".0f", "max"), Column("device", "device", "s", "first"))


def format_section(results: dict[str, dict[str, list[dict[str, Any]]]], header: str) -> str:
    """The Markdown section: a header line, then one table per task."""
    lines = [header, ""]
    for task, methods in results.items():
        lines += [f"#### {task}", "", format_table(methods, BENCH_COLUMNS, markdown=True), ""]
    return "\n".join(lines)


def save_plot(path: Path, task: str, methods: dict[str, list[dict[str, Any]]]) -> None:
    """PSNR and SSIM (means over cases) against seconds per slice (log scale), one point per
    method, labelled with its name and NFE (``dds-100``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    markers = "osD^vP*Xh<>p"
    for ax, key, unit in zip(axes, ("psnr", "ssim"), ("PSNR [dB]", "SSIM")):
        for i, (label, rows) in enumerate(methods.items()):
            seconds = max(statistics.mean(r["seconds_per_slice"] for r in rows), 1e-4)
            ax.scatter(seconds, statistics.mean(r[key] for r in rows), marker=markers[i % len(markers)], label=label)
        ax.set(xscale="log", xlabel="seconds per slice", ylabel=unit, title=f"{task}: {unit.split()[0]}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # names with NFE, e.g. dds-100
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def bench(cfg: DictConfig, overrides: list[str], command: str = "") -> str:
    """Run the configured benchmark (``configs/bench.yaml``) with ``overrides`` applied to every
    task's config; returns the appended section."""
    tasks, count = list(cfg.tasks), int(cfg.count)
    if count < 1 or not tasks:
        raise ConfigError("bench: need count >= 1 and at least one task")
    # every task's config first: a bad override must not cost the tasks before it
    first_cases = [task_config(task, 0, overrides) for task in tasks]
    results = {task: bench_task(task, count, overrides) for task in tasks}
    device = resolve_device(str(first_cases[0].device))  # task keys may be overridden
    if device.type == "cuda":
        memory_note = "peak memory: the CUDA allocator's peak during the method"
    elif bytes_in_use() is not None:
        memory_note = "peak memory: peak of the bytes held through malloc during the method, above its start"
    else:
        memory_note = ("peak memory: growth of the process's resident set during the method; memory the process "
                       "already held (from earlier methods) is reused and not counted, so small values mean no growth")
    header = (f"### recon bench, {time.strftime('%Y-%m-%d %H:%M')}: {machine_description(device)}\n\n"
              f"`python -m recon bench {command}`\n\n{memory_note}")
    section = format_section(results, header)
    out = Path(str(cfg.results))
    previous = out.read_text() if out.is_file() else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as handle:
        handle.write(previous + ("\n" if previous and not previous.endswith("\n") else "") + "\n" + section)
    for task, methods in results.items():
        save_plot(Path(str(cfg.plots)) / f"{task}.png", task, methods)
    print(section)
    return section
