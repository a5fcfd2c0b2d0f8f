"""``python -m recon batch``: every fastMRI multi-coil file in a folder through every method.

For each ``data.root/*.h5`` (sorted) and each method of the task (baselines, then the sampler
if configured), slices are reconstructed ``batch_size`` at a time: the readout oversampling is
removed (:func:`recon.data.mri_sources.regrid`, exact for column masks), the mask is the file's
own ``mask`` when it has one (test sets) else the ``mask`` config (one mask per volume), coil
maps are ESPIRiT estimates per slice from the undersampled data's fully sampled centre, and
the magnitude is centre-cropped to the header's recon size.

Output (``output=DIR``)::

    DIR/METHOD/FILE.h5               fastMRI submission layout (recon.io.fastmri.write_reconstruction)
    DIR/per_volume/METHOD/FILE.json  slices, seconds, realised acceleration, metrics (or null)
    DIR/summary.csv, summary.json    per method: volumes, mean PSNR/SSIM/NMSE, seconds per slice

Metrics (when the file has ``reconstruction_rss``) follow fastMRI's ``evaluate.py``: volume
PSNR and NMSE with the volume's maximum as data range, SSIM per slice with that range,
averaged; reconstruction and target centre-cropped to a common size. Seconds are the
methods' own (ESPIRiT time is reported separately, ``maps_seconds_per_slice``).

Reliability: every file is written atomically and a volume's record after its HDF5, so a rerun
skips (volume, method) pairs that have both; a bad input file (unreadable, truncated, no or
malformed ``kspace``, NaN/Inf) is reported with its name and reason and the batch goes on; the
input folder is only read. One batch writes an output folder at a time: a second one on the
same ``output`` refuses at once (:mod:`recon.io.lock`; the OS frees the lock if the first dies).
A full disk stops the batch with one line; the atomic writes leave every earlier output complete
and no partial file under a final name. Exit status 0, or 1 if any file failed (2 for
configuration errors, a busy output folder or a full disk).

Memory: before any work, each file's slice-batch working set is estimated from its k-space
shape (:func:`memory_need`); above ``memory_limit`` (bytes or ``8GiB``-like text; ``auto``,
the default: the OS's available memory, skipped when ``ray.address`` joins a remote cluster;
``none``: no check) the slice batch is reduced, and a file whose single slice would not fit
fails with the size it would need (both executors).

``executor=ray`` spreads the files over a Ray cluster (:mod:`recon.distributed`), one task per
file, with the same outputs, resume and failure handling; ``executor=local`` (the default) runs
them one after another in this process.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from operators import MASK_KINDS

from .batch_job import complete, no_space, process_file, record_path
from .build import build_methods, resolve_device
from .errors import ConfigError, ReconError
from .io.atomic import atomic_write, save_json
from .io.fastmri import read_fastmri
from .io.lock import output_lock
from .report import Column, format_table


def batch(cfg: DictConfig) -> int:
    """Run the batch configured by ``cfg`` (``configs/batch.yaml``); returns the exit status."""
    root, output = _folders(cfg)
    _check_mask(cfg.mask)
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be >= 1")
    files = sorted(p for p in root.glob("*.h5") if p.is_file())
    if not files:
        raise ConfigError(f"data.root={root}: no *.h5 files")
    spec = cfg.get("memory_limit", "auto")
    remote = str(cfg.get("executor", "local")) == "ray" and (cfg.get("ray") or {}).get("address") is not None
    # this machine's available memory says nothing of a remote cluster's workers
    limit = None if remote and str(spec) == "auto" else memory_limit(spec)
    try:
        with output_lock(output):
            return _run(cfg, files, output, limit)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise ReconError(f"output={output}: no space left on device ({err.filename or 'writing'}); "
                             "the outputs written before are complete and kept") from None
        raise


def _run(cfg: DictConfig, files: list[Path], output: Path, limit: int | None) -> int:
    """Every (file, method) pair not yet complete in ``output``, then the summary (lock held)."""
    from tqdm import tqdm

    device = resolve_device(str(cfg.device))
    methods = build_methods(cfg, device)
    if not methods:
        raise ConfigError("nothing to run: no baselines and no sampler configured")
    jobs = [(path, [name for name in methods if not complete(output, name, path.name)]) for path in files]
    jobs = [(path, names) for path, names in jobs if names]
    executor = str(cfg.get("executor", "local"))
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor={executor}: expected local or ray")
    failures: dict[str, str] = {}
    fitted = []
    for path, names in jobs:  # chunk or refuse what would not fit, before any work (both executors)
        file_cfg, reason = fit_memory(path, cfg, len(names), limit)
        if reason is None:
            fitted.append((path, names, file_cfg))
        else:
            failures[path.name] = reason
            tqdm.write(f"failed: {path.name}: {reason}", file=sys.stderr)
    if executor == "local":
        for path, names, file_cfg in tqdm(fitted, desc="files", unit="file"):
            try:
                reason = process_file(path, {name: methods[name] for name in names}, file_cfg, output, device)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                raise no_space(output, path.name) from None
            if reason is not None:
                failures[path.name] = reason
                tqdm.write(f"failed: {path.name}: {reason}", file=sys.stderr)
    else:
        from .distributed import run_on_ray

        failures.update(run_on_ray(fitted, cfg, output))
    summary = summarise(output, [p.name for p in files], list(methods), failures)
    save_json(output / "summary.json", summary)
    with atomic_write(output / "summary.csv", "w") as handle:
        handle.write(summary_csv(summary["methods"]))
    print(format_summary(summary))
    return 1 if failures else 0


# Rough working set per slice, in k-space-sized complex64 arrays: the k-space and its regridded and
# masked copies, coil maps, coil images and a few CG/ADMM vectors. An estimate, not a measurement:
# a prior network's activations are not counted.
WORKING_ARRAYS = 12
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def memory_limit(spec: Any) -> int | None:
    """``memory_limit`` in bytes: a number, ``"8GiB"``-like text, ``auto`` (the OS's available
    memory, from ``/proc/meminfo``; None where unknown) or ``null``/``none`` (no limit)."""
    if spec is None or str(spec).strip().lower() == "none":
        return None
    text = str(spec).strip().lower()
    if text == "auto":
        return available_memory()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = text[len(number):].strip()
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(f"memory_limit={spec}: expected bytes, e.g. 8GiB or 512MB, auto or none") from None
    if value <= 0:
        raise ConfigError(f"memory_limit={spec}: must be > 0")
    return int(value)


def available_memory() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes (Linux); None elsewhere."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_need(shape: tuple[int, ...], crop: tuple[int, int], methods: int) -> tuple[int, int]:
    """Bytes ``(per slice in a batch, per volume)`` to reconstruct k-space of ``shape``
    ``(S, C, H, W)``: the batch's working set, and the kept magnitudes of every method plus
    the target (float32, cropped)."""
    slices, coils, rows, cols = shape
    return WORKING_ARRAYS * coils * rows * cols * 8, (methods + 1) * slices * crop[0] * crop[1] * 4


def fit_memory(path: Path, cfg: DictConfig, methods: int, limit: int | None) -> tuple[DictConfig, str | None]:
    """``cfg`` with ``batch_size`` reduced so that the file fits ``limit`` bytes, or a one-line
    reason it cannot (even one slice would need more). Unreadable files pass unchanged: the
    reconstruction reports them."""
    if limit is None:
        return cfg, None
    try:
        volume = read_fastmri(path)
    except ReconError:
        return cfg, None
    per_slice, kept = memory_need(volume.kspace_shape, tuple(volume.crop_size), methods)
    wanted = int(cfg.batch_size)
    if per_slice + kept > limit:
        return cfg, (f"needs about {_size(per_slice + kept)} of memory for one slice at a time "
                     f"({volume.num_coils} coils, {volume.kspace_shape[2]}x{volume.kspace_shape[3]} k-space), "
                     f"above the limit of {_size(limit)} (memory_limit)")
    fits = min(wanted, (limit - kept) // per_slice)
    if fits >= wanted:
        return cfg, None
    from tqdm import tqdm

    tqdm.write(f"{path.name}: batch_size={wanted} would need about {_size(wanted * per_slice + kept)} of memory, "
               f"above {_size(limit)}; using batch_size={fits}", file=sys.stderr)
    smaller = cfg.copy()
    smaller.batch_size = int(fits)
    return smaller, None


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _folders(cfg: DictConfig) -> tuple[Path, Path]:
    """``data.root`` (an existing folder) and ``output`` (not inside it: the input is read only)."""
    root, output = Path(str(cfg.data.root)), Path(str(cfg.output))
    if not root.is_dir():
        raise ConfigError(f"data.root={root}: not a folder")
    inner, out = root.resolve(), output.resolve()
    if out == inner or inner in out.parents:
        raise ConfigError(f"output={output}: must lie outside data.root (the input folder is never modified)")
    return root, output


def _check_mask(spec: DictConfig) -> None:
    if spec.kind not in MASK_KINDS:
        raise ConfigError(f"mask.kind={spec.kind}: expected one of {', '.join(MASK_KINDS)}")
    if not float(spec.acceleration) > 1:
        raise ConfigError(f"mask.acceleration={spec.acceleration}: must be > 1")


def summarise(output: Path, names: list[str], methods: list[str], failures: dict[str, str]) -> dict[str, Any]:
    """Per-method means over the records of ``names`` in ``output`` (this run's and earlier ones')."""
    table: dict[str, dict[str, Any]] = {}
    maps_seconds, map_slices = 0.0, 0
    for method in methods:
        records = [json.loads(p.read_text()) for p in (record_path(output, method, n) for n in names) if p.is_file()]
        scored = [r["metrics"] for r in records if r["metrics"] is not None]
        slices = sum(r["slices"] for r in records)
        row: dict[str, Any] = {"volumes": len(records), "scored": len(scored)}
        for key in ("psnr", "ssim", "ssim_object", "nmse"):
            values = [m[key] for m in scored if m.get(key) is not None]  # records of older versions lack ssim_object
            row[key] = float(np.mean(values)) if values else None
        row["seconds_per_slice"] = sum(r["seconds"] for r in records) / slices if slices else None
        table[method] = row
        if not map_slices:
            maps_seconds, map_slices = sum(r["maps_seconds"] for r in records), slices
    return {
        "files": len(names),
        "failed": failures,
        "methods": table,
        "maps_seconds_per_slice": maps_seconds / map_slices if map_slices else None,
    }


def summary_csv(methods: dict[str, dict[str, Any]]) -> str:
    """CSV text: method, volumes, scored, psnr, ssim, ssim_object, nmse, seconds_per_slice."""
    buffer = io.StringIO()
    fields = ["method", "volumes", "scored", "psnr", "ssim", "ssim_object", "nmse", "seconds_per_slice"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for name, row in methods.items():
        writer.writerow({"method": name, **{k: ("" if row[k] is None else row[k]) for k in fields[1:]}})
    return buffer.getvalue()


SUMMARY_COLUMNS = (Column("volumes", "volumes", "d", "first"), Column("psnr", "PSNR [dB]", ".2f", "first"),
                   Column("ssim", "SSIM", ".4f", "first"), Column("ssim_object", "SSIM (object)", ".4f", "first"),
                   Column("nmse", "NMSE", ".2e", "first"),
                   Column("seconds_per_slice", "s/slice", ".3f", "first"))


def format_summary(summary: dict[str, Any]) -> str:
    """The printed table (``n/a``: no scored volume), then one line per failed file."""
    lines = [format_table({name: [row] for name, row in summary["methods"].items()}, SUMMARY_COLUMNS)]
    failed = summary["failed"]
    lines.append(f"{summary['files'] - len(failed)} of {summary['files']} files done")
    lines.extend(f"failed: {name}: {reason}" for name, reason in failed.items())
    return "\n".join(lines)
