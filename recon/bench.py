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

import torch
from omegaconf import DictConfig

from .allocator import bytes_in_use
from .config import load_config
from .errors import ConfigError
from .io.atomic import atomic_write
from .measure import PeakMemory, machine_description, timed
from .run import build_methods, noise_estimates, resolve_device, run_methods, simulate

__all__ = ["BENCH_KEYS", "bench", "machine_description", "timed"]

BENCH_KEYS = ("tasks", "count", "results", "plots")


def bench_task(task: str, count: int, overrides: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per method (named ``name-NFE`` for samplers): one metrics row per case."""
    rows: dict[str, list[dict[str, Any]]] = {}
    methods: dict[str, Any] = {}
    for index in range(count):
        cfg = load_config([f"task={task}", f"data.index={index}", f"seed={index}", *overrides])
        device = resolve_device(str(cfg.device))
        generator = torch.Generator(device=device).manual_seed(index)
        case = simulate(cfg, device, generator)
        slices = case.truth.shape[2] if case.truth.dim() == 5 else 1
        methods = methods or build_methods(cfg, device)  # once per task: cases differ in data only
        for name, method in methods.items():
            with PeakMemory(device) as memory:
                result = run_methods({name: method}, case.y, case.physics, case.truth, generator)[name]
            noise_estimates(case, {name: result})
            metrics = dict(result.metrics, seconds_per_slice=result.metrics["seconds"] / slices,
                           peak_mib=memory.peak_mib, device=str(device))
            label = name if metrics["nfe"] == 0 else f"{name}-{metrics['nfe']}"
            rows.setdefault(label, []).append(metrics)
    return rows


def _mean_sd(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def format_section(results: dict[str, dict[str, list[dict[str, Any]]]], header: str) -> str:
    """The Markdown section: a header line, then one table per task."""
    lines = [header, ""]
    for task, methods in results.items():
        volume = all("z_psnr" in r for rows in methods.values() for r in rows)  # 3D tasks: z-PSNR too
        lines += [f"#### {task}", "", "| method | cases | PSNR [dB] | SSIM | " + ("z-PSNR [dB] | " if volume else "")
                  + "seconds/slice | NFE | peak memory [MiB] | device |", "| --- " * (9 if volume else 8) + "|"]
        for label, rows in methods.items():
            peaks = [r["peak_mib"] for r in rows if r["peak_mib"] is not None]
            peak = f"{max(peaks):.0f}" if peaks else "n/a"
            z = f"{_mean_sd([r['z_psnr'] for r in rows], 2)} | " if volume else ""
            lines.append(f"| {label} | {len(rows)} | {_mean_sd([r['psnr'] for r in rows], 2)} | "
                         f"{_mean_sd([r['ssim'] for r in rows], 4)} | {z}"
                         f"{statistics.mean(r['seconds_per_slice'] for r in rows):.2f} | {rows[0]['nfe']} | "
                         f"{peak} | {rows[0]['device']} |")
        lines.append("")
    return "\n".join(lines)


def save_plot(path: Path, task: str, methods: dict[str, list[dict[str, Any]]]) -> None:
    """PSNR (mean over cases) against seconds per slice (log scale), one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, rows in methods.items():
        seconds = max(statistics.mean(r["seconds_per_slice"] for r in rows), 1e-4)
        psnr = statistics.mean(r["psnr"] for r in rows)
        ax.scatter(seconds, psnr)
        ax.annotate(label, (seconds, psnr), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="seconds per slice", ylabel="PSNR [dB]", title=task)
    ax.grid(alpha=0.3)
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
    results = {task: bench_task(task, count, overrides) for task in tasks}
    device = resolve_device(str(load_config(overrides).device))
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
