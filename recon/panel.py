"""The run's figure: truth and every method in one row, absolute errors below, and the
posterior standard deviation maps of sampled methods in a third row when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io.atomic import atomic_write


def save_panel(path: str | Path, truth: np.ndarray, results: dict[str, np.ndarray],
               metrics: dict[str, dict[str, float]], title: str = "",
               measurement: np.ndarray | None = None, stds: dict[str, np.ndarray] | None = None,
               noise_truth: np.ndarray | None = None, noises: dict[str, np.ndarray] | None = None) -> None:
    """Write ``path`` (PNG): row 1 truth | methods, row 2 measurement | ``|method - truth|``,
    then (when ``stds`` is not empty) each sampled method's per-pixel standard deviation, then
    (when ``noise_truth`` is given) the true structured noise | each method's estimate of it.

    ``truth`` and each result are 2D arrays in the same units; the display window is
    ``[0, max(truth)]`` and all error and standard-deviation maps share one colour scale. ``measurement`` (2D, real
    or complex: shown in magnitude) fills the slot under the truth. Noise maps (2D, the
    measurement's shape) share a symmetric colour scale set by the true noise.
    """
    plt = _pyplot()

    stds, noises = stds or {}, noises or {}
    cols, rows = 1 + len(results), 2 + bool(stds) + (noise_truth is not None)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    vmax = float(truth.max()) or 1.0
    errors = {name: np.abs(img - truth) for name, img in results.items()}
    emax = max((float(np.percentile(e, 99.5)) for e in errors.values()), default=1.0) or 1.0
    axes[0, 0].imshow(truth, cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("truth", fontsize=9)
    for col, (name, img) in enumerate(results.items(), start=1):
        m = metrics.get(name, {})
        axes[0, col].imshow(img, cmap="gray", vmin=0, vmax=vmax)
        axes[0, col].set_title(f"{name}\n{m.get('psnr', float('nan')):.2f} dB, SSIM {m.get('ssim', float('nan')):.3f}",
                               fontsize=9)
        axes[1, col].imshow(errors[name], cmap="magma", vmin=0, vmax=emax)
        axes[1, col].set_title(f"|{name} - truth|", fontsize=9)
        if name in stds:
            axes[2, col].imshow(stds[name], cmap="viridis", vmin=0, vmax=emax)
            axes[2, col].set_title(f"{name}: posterior std", fontsize=9)
    if measurement is not None:
        axes[1, 0].imshow(np.abs(measurement), cmap="gray", aspect="auto")
        axes[1, 0].set_title("measurement", fontsize=9)
    if noise_truth is not None:
        row, nmax = rows - 1, float(np.abs(noise_truth).max()) or 1.0
        axes[row, 0].imshow(noise_truth, cmap="RdBu_r", vmin=-nmax, vmax=nmax, aspect="auto")
        axes[row, 0].set_title("structured noise", fontsize=9)
        for col, name in enumerate(results, start=1):
            if name in noises:
                axes[row, col].imshow(noises[name], cmap="RdBu_r", vmin=-nmax, vmax=nmax, aspect="auto")
                axes[row, col].set_title(f"{name}: noise estimate", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    _save_figure(fig, path, title)


def save_volume_panel(path: str | Path, truth: np.ndarray, results: dict[str, np.ndarray],
                      metrics: dict[str, dict[str, float]], aspect: float = 1.0, title: str = "") -> None:
    """Write ``path`` (PNG) for ``(D, H, W)`` volumes: one column per volume (truth, then each
    method); rows = the central axial, coronal and sagittal planes, then each method's absolute
    error in the coronal and sagittal planes (where slice-to-slice disagreement shows as streaks
    along z). ``aspect`` is the slice thickness over the pixel size (stretches the coronal and
    sagittal views to scale). Images use the window ``[0, max(truth)]``; the error maps share one
    colour scale, the median over methods of their 99.5th percentile (so one poor baseline does
    not wash out the others)."""
    plt = _pyplot()

    volumes = {"truth": truth, **results}
    d, h, w = truth.shape
    planes = {"axial": lambda v: v[d // 2], "coronal": lambda v: v[:, h // 2, :], "sagittal": lambda v: v[:, :, w // 2]}
    rows = [*planes, "coronal", "sagittal"]
    flat = max(d * aspect / h, 0.3)  # height of a coronal/sagittal row relative to the axial row
    fig, axes = plt.subplots(len(rows), len(volumes), figsize=(2.6 * len(volumes), 3.2 + 4 * 1.6 * flat),
                             squeeze=False, gridspec_kw={"height_ratios": [1.0, *[flat] * 4]})
    vmax = float(truth.max()) or 1.0
    errors = {name: np.abs(volume - truth) for name, volume in results.items()}
    emax = float(np.median([np.percentile(e, 99.5) for e in errors.values()])) if errors else 1.0
    for col, (name, volume) in enumerate(volumes.items()):
        m = metrics.get(name)
        label = name if m is None else f"{name}\n{m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}" + (
            f"\nz-PSNR {m['z_psnr']:.2f} dB" if "z_psnr" in m else "")
        for row, plane in enumerate(rows):
            ax = axes[row, col]
            ax.axis("off")
            scale = {"aspect": 1.0 if plane == "axial" else aspect}
            if row < 3:
                ax.imshow(planes[plane](volume), cmap="gray", vmin=0, vmax=vmax, **scale)
                ax.set_title(label if row == 0 else plane, fontsize=9)
            elif name in errors:
                ax.imshow(planes[plane](errors[name]), cmap="magma", vmin=0, vmax=emax or 1.0, **scale)
                ax.set_title(f"{plane} |error|", fontsize=9)
    _save_figure(fig, path, title)


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | Path, title: str) -> None:
    """Title, lay out and write ``fig`` as a PNG atomically, then release it."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(Path(path), "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    _pyplot().close(fig)
