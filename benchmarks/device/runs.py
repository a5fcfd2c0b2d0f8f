"""The stages of ``benchmarks/device_run.py`` that run the project's workloads on the device:
``python -m recon run`` per task (``run_sparse_ct``, ``run_mri``, ``run_ct3d``, ``run_ct3d_wedge``;
``run_compile`` and ``run_bf16`` against them) and ``figures`` (``benchmarks/gpu_figures.py`` in the time left)."""

from __future__ import annotations

from typing import Any, Callable

from .stage import REPO, Context, Step, merge, read_json


# Tiny sizes for --smoke, appended to the GPU command line (the same command otherwise).
SMOKE_2D = ["samplers.dds.steps=3", "data.size=32"]
SMOKE_3D = ["data.size=32", "data.depth=2", "samplers.independent_2d.steps=2", "samplers.slice_coupled.steps=2",
            "samplers.dds_3d.steps=2"]
SMOKE_WEDGE = ["data.size=32", "data.depth=32", "samplers.independent_2d.steps=2", "samplers.dds_3d.steps=2",
               "samplers.perpendicular.steps=2"]


def build_run(name: str, overrides: list[str], smoke: list[str]) -> Callable[[Context], list[Step]]:
    """``python -m recon run`` with ``overrides`` (``SMOKE|GPU`` picks by mode, e.g. compile's
    backend), ``device=``, the ``smoke`` sizes in --smoke, and a fresh run folder."""
    def build(ctx: Context) -> list[Step]:
        chosen = [o.split("|")[0 if ctx.smoke else 1] if "|" in o else o for o in overrides]
        args = merge([*chosen, f"device={ctx.device}"], smoke if ctx.smoke else [])
        return [Step("recon run", ctx.recon("run", *args, f"hydra.run.dir={ctx.dir(name)}"))]
    return build


def _metrics(ctx: Context, name: str) -> dict[str, Any]:
    report = read_json(ctx.dir(name) / "metrics.json", "recon run")
    keep = ("psnr", "ssim", "z_psnr", "seconds", "nfe")
    return {"task": report.get("task"), "data": report.get("data"),
            "methods": {m: {k: v for k, v in values.items() if k in keep} for m, values in report["methods"].items()}}


def collect_run(name: str, compare_with: str | None = None, label: str = "") -> Callable[..., dict[str, Any]]:
    def collect(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
        out = _metrics(ctx, name)
        other = ctx.records.get(compare_with or "", {}).get("results", {}).get("methods") if compare_with else None
        if other:
            out[f"vs_{compare_with}"] = {
                m: {"psnr_delta_db": v["psnr"] - other[m]["psnr"], "seconds_ratio": v["seconds"] / other[m]["seconds"]
                    if other[m]["seconds"] else None}
                for m, v in out["methods"].items() if m in other}
            if label:
                out[f"vs_{compare_with}"]["note"] = label
        return out
    return collect


FIGURES_OVERHEAD_S = 20.0  # python and torch start-up before gpu_figures' own clock (its budget includes its set-up)


def build_figures(ctx: Context) -> list[Step]:
    overhead = 15.0 if ctx.smoke else FIGURES_OVERHEAD_S
    budget = max(ctx.stage_timeout_s - overhead, 1.0)
    argv = [ctx.python, str(REPO / "benchmarks" / "gpu_figures.py"), "--precisions", "fp32,tf32,bf16",
            "--budget-s", f"{6 if ctx.smoke else budget:.0f}", "--json", str(ctx.dir("figures") / "figures.json")]
    if ctx.smoke:  # a budget that runs some rows and skips others: both paths
        argv += ["--device", "cpu", "--layout", "small", "--size", "32", "--slices", "4", "--steps", "2",
                 "--dps-steps", "2"]
    return [Step("gpu_figures", argv)]


def collect_figures(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    return read_json(ctx.dir("figures") / "figures.json", "gpu_figures")
