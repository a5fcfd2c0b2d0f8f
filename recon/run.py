"""``python -m recon run``: simulate a measurement, reconstruct with every method, report.

A *method* is any callable ``method(y, physics, generator=g) -> x`` with an ``nfe``
attribute (network evaluations; 0 for classical baselines). Baselines come from the
``baselines`` config node (a map of name -> ``_target_`` config); a diffusion sampler from
the ``sampler`` node joins the same table, panel and ``metrics.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .allocator import reuse_freed_memory
from .config import job_config
from .errors import ConfigError, ReconError
from .metrics import evaluate

Method = Callable[..., torch.Tensor]


@dataclass
class MethodResult:
    """One method's reconstruction ``(1, 1, H, W)`` (complex for MRI) and its scores.

    With posterior sampling (``samples=K > 1``, diffusion samplers only) ``image`` is the
    mean of the ``K`` draws ``samples`` ``(K, 1, H, W)`` and ``std`` ``(1, 1, H, W)``, real,
    their per-pixel standard deviation. ``noise`` (``(1, *y.shape[1:])``) is the structured
    noise a joint sampler separated from the signal (the mean over draws).
    """

    image: torch.Tensor
    metrics: dict[str, float]
    std: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    noise: torch.Tensor | None = None


def resolve_device(name: str, *, reuse_memory: bool = True) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    For the CPU, ``reuse_memory`` also switches glibc to keeping freed activation buffers
    (:func:`recon.allocator.reuse_freed_memory`; batched DDS of 8 slices measured 1.36-1.54x faster).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA device is available (use device=cpu or device=auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device={name}: expected auto, cpu or cuda")
    if name.startswith("cuda:"):
        index = name.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")
    if name == "cpu" and reuse_memory:
        reuse_freed_memory()
    return torch.device(name)


def instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures name the config key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ReconError):
            raise cause from None
        detail = str(cause) if cause is not None else str(err).splitlines()[0]
        raise ConfigError(f"{key}: {detail}") from None


def build_prior(node: DictConfig, device: torch.device, precision: str = "fp32",
                compile: bool | str = False) -> Any:
    """The configured prior: ``prior.checkpoint`` (a path) or the bundled ``prior.name``;
    ``prior.scale`` (optional) replaces the card's normalisation scale (physical units per
    model unit), for data in other units than the prior was trained on; ``precision``
    (fp32 | bf16 | fp16) sets the network's arithmetic (autocast); ``compile`` (``True`` for
    inductor, or a ``torch.compile`` backend name) compiles the network in place."""
    from priors import CheckpointError, load_prior

    try:
        prior = load_prior(node.checkpoint or node.name, card=node.get("card"))
    except CheckpointError as err:
        raise ConfigError(f"prior: {err}") from None
    if node.get("scale") is not None:
        if float(node.scale) <= 0:
            raise ConfigError(f"prior.scale={node.scale}: must be > 0")
        prior.normalization = replace(prior.normalization, scale=float(node.scale))
    try:
        prior.precision = str(precision)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    prior = prior.to(device)
    if compile not in (False, None, "false"):
        # The compiler picks its own memory layouts; autograd tracing fails on channels-last GroupNorm.
        prior.network.to(memory_format=torch.contiguous_format)
        prior.channels_last = False
        prior.network.compile(backend="inductor" if compile in (True, "true") else str(compile))
    return prior


def build_methods(cfg: DictConfig, device: torch.device) -> dict[str, Method]:
    """Baselines first, then the configured ``sampler`` (if any) and every entry of the
    ``samplers`` map (name -> sampler config; the 3D tasks), keyed by their names; samplers
    get the configured prior."""
    methods: dict[str, Method] = {}
    for name, node in (cfg.get("baselines") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"baselines.{name}: no _target_ (settings without a baseline config; "
                              f"choose one with baselines=[...])")
        methods[str(name)] = instantiate(node, f"baselines.{name}")
    samplers: dict[str, tuple[DictConfig, str]] = {}
    sampler = cfg.get("sampler")
    if sampler is not None and sampler.get("name"):
        samplers[str(sampler.name)] = (OmegaConf.masked_copy(sampler, [k for k in sampler if k != "name"]), "sampler")
    for name, node in (cfg.get("samplers") or {}).items():
        samplers[str(name)] = (node, f"samplers.{name}")
    if samplers and cfg.get("prior") is None:
        raise ConfigError(f"sampler {next(iter(samplers))} needs a prior (prior=...)")
    prior = (build_prior(cfg.prior, device, str(cfg.get("precision", "fp32")), cfg.get("compile", False))
             if samplers else None)
    for name, (node, key) in samplers.items():
        methods[name] = WithProgress(instantiate(node, key, prior=prior), name)
    return methods


class WithProgress:
    """Wrap a sampler so that its steps drive a progress bar (on stderr)."""

    def __init__(self, sampler: Method, name: str):
        self.sampler = sampler
        self.name = name
        self.nfe = int(getattr(sampler, "nfe", 0))
        if hasattr(sampler, "separate"):  # joint samplers: (x, n)
            self.separate = lambda y, physics, **kwargs: self._with_bar(sampler.separate, y, physics, **kwargs)

    def __call__(self, y: torch.Tensor, physics: torch.nn.Module, **kwargs: Any) -> torch.Tensor:
        return self._with_bar(self.sampler, y, physics, **kwargs)

    def _with_bar(self, fn: Callable[..., Any], y: torch.Tensor, physics: torch.nn.Module, **kwargs: Any) -> Any:
        from tqdm import tqdm

        with tqdm(desc=self.name, unit="step", leave=False) as bar:
            def callback(step: int, total: int) -> None:
                bar.total = total
                bar.update(1)

            return fn(y, physics, callback=callback, **kwargs)


def run_methods(methods: dict[str, Method], y: torch.Tensor, physics: torch.nn.Module,
                truth: torch.Tensor, generator: torch.Generator, samples: int = 1) -> dict[str, MethodResult]:
    """Run each method on ``y`` (batch 1), timing it and scoring it against ``truth``.

    Diffusion samplers (``nfe > 0``) draw ``samples`` posterior samples in one batch when
    ``samples > 1``; they are scored on the samples' mean (see :class:`MethodResult`).
    Methods with a ``separate`` (joint signal-and-noise samplers) also return their noise.
    """
    if samples < 1:
        raise ConfigError(f"samples={samples}: expected a positive number of posterior samples")
    results: dict[str, MethodResult] = {}
    for name, method in methods.items():
        nfe = int(getattr(method, "nfe", 0))
        draws = samples if nfe > 0 else 1
        synchronize(y.device)
        start = time.perf_counter()
        batch = y.expand(draws, *y.shape[1:]).contiguous()
        separate = getattr(method, "separate", None)
        try:
            if separate is not None:
                x, noise = separate(batch, physics, generator=generator)
            else:
                x, noise = method(batch, physics, generator=generator), None
        except ValueError as err:  # a method refusing this measurement or operator: one line, named
            raise ConfigError(f"{name}: {err}") from None
        x = x.detach()
        noise = None if noise is None else noise.detach().mean(dim=0, keepdim=True)
        synchronize(y.device)
        seconds = time.perf_counter() - start
        if draws > 1:
            mean, std = sample_statistics(x)
            result = MethodResult(mean, evaluate(mean, truth), std, x, noise)
            result.metrics["mean_std"] = float(std.mean())
        else:
            result = MethodResult(x, evaluate(x, truth), noise=noise)
        result.metrics.update(seconds=seconds, nfe=nfe)
        results[name] = result
    return results


def sample_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(1, ...)`` and unbiased per-pixel standard deviation ``(1, ...)`` (real) of
    ``K >= 2`` draws ``x`` ``(K, ...)``; for complex draws ``std = sqrt(sum |x - mean|^2 / (K - 1))``."""
    mean = x.mean(dim=0, keepdim=True)
    std = ((x - mean).abs().square().sum(dim=0, keepdim=True) / (x.shape[0] - 1)).sqrt()
    return mean, std


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. Brackets every timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_run_dir(path: Path) -> Path:
    """Create the run folder; refuse one that already holds files (nothing is overwritten)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path}: run folder already exists and is not empty; choose another hydra.run.dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class SimulatedCase:
    """A ground truth, its forward operator and a noisy measurement."""

    truth_info: Any
    truth: torch.Tensor
    physics: torch.nn.Module
    y: torch.Tensor
    structured_noise: torch.Tensor | None = None


def simulate(cfg: DictConfig, device: torch.device, generator: torch.Generator) -> SimulatedCase:
    """Build data, operator and noise from ``cfg`` and draw the measurement.

    The data source supplies the operator factory's data-dependent arguments
    (``operator_inputs()``) and draws the measurement (``measure``); see
    :mod:`recon.data.sources`. For structured noise (:class:`operators.StructuredNoise`) the
    drawn pattern is replayed from the generator's state and kept as ``structured_noise``.
    """
    truth_info = instantiate(cfg.data, "data").to(device)
    physics = instantiate(cfg.operator, "operator", **truth_info.operator_inputs()).to(device)
    noise = instantiate(cfg.noise, "noise")
    state = generator.get_state()
    with torch.no_grad():
        y = truth_info.measure(physics, noise, generator)
    structured = noise.pattern_of(y, state) if hasattr(noise, "pattern_of") else None
    return SimulatedCase(truth_info, truth_info.image, physics, y, structured)


def noise_estimates(case: SimulatedCase, results: dict[str, MethodResult]) -> dict[str, torch.Tensor]:
    """With structured noise: each method's estimate of it, ``(1, *y.shape[1:])``, scored into its
    metrics as ``noise_error = ||n_hat - n|| / ||n||``. A joint sampler's is the noise it
    separated; any other method's is its residual ``y - A x_hat`` (all it attributes to noise,
    white part included). Empty without structured noise."""
    if case.structured_noise is None:
        return {}
    estimates = {}
    truth = case.structured_noise
    for name, res in results.items():
        with torch.no_grad():
            estimate = res.noise if res.noise is not None else case.y - case.physics(res.image)
        res.metrics["noise_error"] = float(torch.linalg.vector_norm(estimate - truth) / torch.linalg.vector_norm(truth))
        estimates[name] = estimate
    return estimates


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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Execute a single-image run as configured; returns the ``metrics.json`` content."""
    from .io.atomic import save_json, save_npy
    from .io.images import save_nifti
    from .panel import save_panel, save_volume_panel

    device = resolve_device(str(cfg.device))
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    case = simulate(cfg, device, generator)
    truth_info, truth, physics, y = case.truth_info, case.truth, case.physics, case.y
    methods = build_methods(cfg, device)
    if not methods:
        raise ConfigError("nothing to run: no baselines and no sampler configured")
    run_dir = prepare_run_dir(Path(cfg.hydra.run.dir))
    results = run_methods(methods, y, physics, truth, generator, samples=int(cfg.get("samples", 1)))
    noises = noise_estimates(case, results)

    thickness_cm = getattr(truth_info, "slice_thickness_cm", None) or truth_info.pixel_size_cm
    spacing_mm = (10 * truth_info.pixel_size_cm, 10 * truth_info.pixel_size_cm, 10 * thickness_cm)
    truth_np = truth.cpu().numpy()
    save_npy(run_dir / "ground_truth.npy", truth_np)
    save_npy(run_dir / "measurement.npy", y.cpu().numpy())
    for name, res in results.items():
        image = res.image.cpu().numpy()
        save_npy(run_dir / f"recon_{name}.npy", image)
        save_nifti(run_dir / f"recon_{name}.nii.gz", magnitude(image[0, 0]), spacing=spacing_mm)
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
    report = {
        "task": str(cfg.task.name),
        "data": truth_info.name,
        "units": truth_info.units,
        "data_range": float(magnitude(truth_np).max()),
        "methods": {name: res.metrics for name, res in results.items()},
    }
    save_json(run_dir / "metrics.json", report)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(job_config(cfg)))
    if truth.dim() == 5:
        save_volume_panel(run_dir / "panel.png", truth_np[0, 0],
                          {n: r.image[0, 0].cpu().numpy() for n, r in results.items()}, report["methods"],
                          aspect=thickness_cm / truth_info.pixel_size_cm, title=f"{cfg.task.name}: {truth_info.name}")
    else:
        save_panel(run_dir / "panel.png", magnitude(truth_np[0, 0]),
                   {n: magnitude(r.image[0, 0].cpu().numpy()) for n, r in results.items()},
                   report["methods"], title=f"{cfg.task.name}: {truth_info.name}",
                   measurement=measurement_display(y[0, 0].cpu().numpy()),
                   stds={n: r.std[0, 0].cpu().numpy() for n, r in results.items() if r.std is not None},
                   noise_truth=None if case.structured_noise is None else case.structured_noise[0, 0].cpu().numpy(),
                   noises={n: e[0, 0].cpu().numpy() for n, e in noises.items()})
    print(format_table(report["methods"]))
    print(f"run folder: {run_dir}")
    return report


def format_table(methods: dict[str, dict[str, float]]) -> str:
    """A plain-text table: method, PSNR, SSIM, NMSE, [z-PSNR for volumes,] seconds, NFE."""
    volume = all("z_psnr" in m for m in methods.values())
    lines = [f"{'method':<16}{'PSNR [dB]':>10}{'SSIM':>8}{'NMSE':>10}" + (f"{'z-PSNR':>8}" if volume else "")
             + f"{'seconds':>10}{'NFE':>7}"]
    for name, m in methods.items():
        z = f"{m['z_psnr']:>8.2f}" if volume else ""
        lines.append(f"{name:<16}{m['psnr']:>10.2f}{m['ssim']:>8.4f}{m['nmse']:>10.2e}{z}"
                     f"{m['seconds']:>10.2f}{m['nfe']:>7d}")
    return "\n".join(lines)

