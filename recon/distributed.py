"""Ray execution of a batch: one task per input file, each on its own worker (and GPU).

The driver decides which (file, method) pairs are still to do (resume), submits one task per
file, and collects each file's outcome as it finishes; workers build the methods from the
same config, reconstruct, and write their outputs and records atomically into the shared
output folder, exactly as the local executor does. A file whose input is bad comes back with
its reason; a task that crashes (a worker lost, an unexpected exception) is reported the same
way, and the batch goes on.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .batch_job import no_space
from .config import job_config
from .errors import ConfigError

__all__ = ["run_on_ray"]


NO_SPACE = "\0no space left on device"  # a worker's answer when the output disk is full (the batch stops)


def _reconstruct_file(path: str, names: list[str], config: dict[str, Any], output: str) -> str | None:
    """Worker side: build the named methods from ``config`` (the file's own, after the memory
    fit) and reconstruct ``path``; :data:`NO_SPACE` when the output disk is full."""
    from .batch_job import process_file
    from .build import build_methods, resolve_device

    cfg = OmegaConf.create(config)
    device = resolve_device(str(cfg.device))
    methods = {name: m for name, m in build_methods(cfg, device, progress=False).items() if name in names}
    try:
        return process_file(Path(path), methods, cfg, Path(output), device)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            return NO_SPACE
        raise


def run_on_ray(jobs: list[tuple[Path, list[str], DictConfig]], cfg: DictConfig, output: Path) -> dict[str, str]:
    """Reconstruct ``jobs`` ((file, methods still to do, the file's config) triples) on Ray;
    returns failures by file name. A full output disk on any worker cancels the rest and raises
    the same one-line error as the local executor.

    ``cfg.ray``: ``address`` (``null``: start a local Ray instance; ``auto`` or ``host:port``:
    join a running cluster), ``num_cpus`` (local instance only; ``null``: all cores),
    ``cpus_per_task``, and ``gpus_per_task`` (``auto``: 1 when the cluster has GPUs, else 0).
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("executor=ray needs Ray: pip install 'recon[ray]'") from None
    from tqdm import tqdm

    settings = cfg.get("ray") or {}
    address = settings.get("address")
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address is None else str(address), include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address is not None or settings.get("num_cpus") is None else int(settings.num_cpus))
    try:
        gpus = settings.get("gpus_per_task", "auto")
        gpus = (1 if ray.cluster_resources().get("GPU", 0) > 0 else 0) if gpus == "auto" else float(gpus)
        task = ray.remote(num_cpus=float(settings.get("cpus_per_task", 1)), num_gpus=gpus, max_retries=0)(
            _reconstruct_file)
        pending = {task.remote(str(path), names, OmegaConf.to_container(job_config(file_cfg), resolve=True),
                               str(output)): path.name for path, names, file_cfg in jobs}
        failures: dict[str, str] = {}
        with tqdm(total=len(pending), desc="files (ray)", unit="file") as bar:
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(done)
                try:
                    reason = ray.get(done)
                except Exception as err:  # a crashed task: report it with the file, go on
                    reason = f"task failed: {str(err).strip().splitlines()[-1]}"
                if reason == NO_SPACE:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise no_space(output, name)
                if reason is not None:
                    failures[name] = reason
                    tqdm.write(f"failed: {name}: {reason}", file=sys.stderr)
                bar.update(1)
        return failures
    finally:
        if started:
            ray.shutdown()
