"""Reconstruct one fastMRI multi-coil file with every method; write its HDF5 outputs and its record.

One step of ``python -m recon batch`` (:mod:`recon.batch`), shared by the local and the Ray
executor (:mod:`recon.distributed`). Methods are timed by the engine
(:func:`recon.engine.run_method`). Each method gets its own generator seeded with ``seed`` per
volume, so a volume's outputs are the same bytes whichever of its methods a (resumed) run redoes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from .build import Method, instantiate
from .data.mri_sources import regrid
from .engine import run_method
from .errors import InputError, ReconError
from .io.atomic import save_json
from .io.fastmri import FastMRIVolume, center_crop, read_fastmri, write_reconstruction
from .metrics import evaluate

RECORDS = "per_volume"


def record_path(output: Path, method: str, name: str) -> Path:
    """Where the record (JSON) of ``method`` on input file ``name`` goes."""
    return output / RECORDS / method / f"{Path(name).stem}.json"


def complete(output: Path, method: str, name: str) -> bool:
    """Whether ``method`` on ``name`` is done: its HDF5 and, written after it, its record."""
    return (output / method / name).is_file() and record_path(output, method, name).is_file()


def process_file(path: Path, methods: dict[str, Method], cfg: DictConfig, output: Path,
                 device: torch.device) -> str | None:
    """:func:`reconstruct_volume`, with a bad input reported as its reason (``None``: done)."""
    try:
        reconstruct_volume(path, methods, cfg, output, device)
    except (ReconError, ValueError) as err:
        return err.problem if isinstance(err, InputError) else str(err)
    return None


def reconstruct_volume(path: Path, methods: dict[str, Method], cfg: DictConfig, output: Path,
                       device: torch.device) -> None:
    """Reconstruct every slice of ``path`` with each method; write outputs and records."""
    from tqdm import tqdm

    volume = read_fastmri(path)
    if volume.num_slices == 0:
        raise InputError(path, "kspace holds no slices")
    rows, cols = volume.kspace_shape[-2:]
    crop = tuple(volume.crop_size)
    if crop[0] > rows or crop[1] > cols:
        raise InputError(path, f"recon size {crop} exceeds the k-space ({rows}, {cols})")
    shape = (crop[0], cols)
    mask = torch.from_numpy(volume.mask) if volume.mask is not None else cfg.mask
    seed = int(cfg.seed)
    # one generator per method, so a method's draws do not depend on which others run with it
    # (a rerun that redoes only some methods of a volume gives the same outputs)
    generators = {name: torch.Generator(device=device).manual_seed(seed) for name in methods}
    images: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    maps_seconds, sampling = 0.0, None
    step = int(cfg.batch_size)
    with tqdm(total=volume.num_slices, desc=path.name, unit="slice", leave=False) as bar:
        for start in range(0, volume.num_slices, step):
            indices = range(start, min(start + step, volume.num_slices))
            kspace = torch.stack([regrid(torch.from_numpy(volume.kspace(i)), shape) for i in indices])
            tic = time.perf_counter()
            physics = instantiate(cfg.operator, "operator", shape=shape, mask=mask, maps=None,
                                  kspace=kspace).to(device)
            maps_seconds += time.perf_counter() - tic
            sampling = physics.mask.cpu()
            y = physics.mask * kspace.to(device)
            for name, method in methods.items():
                x, _, elapsed = run_method(name, method, y, physics, generators[name])
                seconds[name] += elapsed
                images[name].append(center_crop(x.detach().abs()[:, 0], crop).cpu().numpy())
            bar.update(len(indices))
    target = _target(volume)
    acceleration = sampling.numel() / float(sampling.sum())
    for name in methods:
        recon = np.concatenate(images[name])
        write_reconstruction(output / name / path.name, recon, method=name, crop_size=crop, mask=sampling,
                             acceleration=acceleration, center_fraction=_center_fraction(volume, cfg.mask))
        save_json(record_path(output, name, path.name), {
            "file": path.name,
            "method": name,
            "slices": volume.num_slices,
            "seconds": seconds[name],
            "maps_seconds": maps_seconds,
            "acceleration": acceleration,
            "metrics": None if target is None else volume_metrics(recon, target),
        })


def _target(volume: FastMRIVolume) -> np.ndarray | None:
    if not volume.has_target:
        return None
    return np.stack([volume.target(i) for i in range(volume.num_slices)])


def _center_fraction(volume: FastMRIVolume, spec: DictConfig) -> float | None:
    """The configured centre fraction (its default made explicit), None for a file's own mask."""
    if volume.mask is not None:
        return None
    fraction = spec.center_fraction
    return float(fraction) if fraction is not None else 0.32 / float(spec.acceleration)


def volume_metrics(recon: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """fastMRI's volume metrics of magnitude stacks ``(S, h, w)``, both centre-cropped to the
    smaller of their sizes: PSNR/NMSE over the volume, SSIM per slice averaged, data range the
    target volume's maximum."""
    size = (min(recon.shape[-2], target.shape[-2]), min(recon.shape[-1], target.shape[-1]))
    return evaluate(center_crop(recon, size), center_crop(target, size))


def no_space(output: Path, name: str) -> ReconError:
    """The one-line error of a full disk while writing ``name``'s outputs (the batch stops)."""
    return ReconError(f"output={output}: no space left on device while writing the outputs of {name}; stopped, "
                      "the outputs written before are complete and kept, and none of this file's is left partial")
