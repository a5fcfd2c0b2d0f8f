"""The one reconstruction engine: load and simulate a case, run and time every method, score it.

``run``, ``bench``, the benchmark scripts and (for its files' slices) ``batch`` with its Ray
executor all go through here, so a case is simulated, a method timed and a result scored one
way only. :class:`Engine` is the whole path for one configured case; the steps are public for
callers that bring their own measurements (``batch``).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from .build import Method, build_methods, instantiate, resolve_device
from .errors import ConfigError
from .grid import on_prior_grid, warn_anisotropic
from .measure import PeakMemory, synchronize
from .metrics import evaluate

__all__ = ["Case", "Engine", "MethodResult", "Outcome", "noise_estimates", "run_method", "run_methods",
           "sample_statistics", "simulate"]


@dataclass
class Case:
    """A ground truth (``source``: the data source, with its units and voxel size), its forward
    operator and a noisy measurement; ``structured_noise``: the drawn structured noise, if any."""

    source: Any
    truth: torch.Tensor
    physics: torch.nn.Module
    y: torch.Tensor
    structured_noise: torch.Tensor | None = None


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


@dataclass
class Outcome:
    """A configured case and every method's result on it (see :func:`run_case`)."""

    case: Case
    results: dict[str, MethodResult]
    noises: dict[str, torch.Tensor]


def simulate(cfg: DictConfig, device: torch.device, generator: torch.Generator) -> Case:
    """Build data, operator and noise from ``cfg`` and draw the measurement.

    The data source supplies the operator factory's data-dependent arguments
    (``operator_inputs()``) and draws the measurement (``measure``); see
    :mod:`recon.data.sources`. For structured noise (:class:`operators.StructuredNoise`) the
    drawn pattern is replayed from the generator's state and kept as ``structured_noise``.
    """
    source = instantiate(cfg.data, "data").to(device)
    factory = instantiate(cfg.operator, "operator", _partial_=True)  # the inputs it takes, by its signature
    physics = instantiate(cfg.operator, "operator", **source.operator_inputs(factory)).to(device)
    noise = instantiate(cfg.noise, "noise")
    state = generator.get_state()
    with torch.no_grad():
        y = source.measure(physics, noise, generator)
    structured = noise.pattern_of(y, state) if hasattr(noise, "pattern_of") else None
    return Case(source, source.image, physics, y, structured)


def run_method(name: str, method: Method, y: torch.Tensor, physics: torch.nn.Module,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """``(x, noise or None, seconds)`` of one method on ``y`` (any batch), timed with the device's
    queue drained before and after. Methods with a ``separate`` (joint signal-and-noise
    samplers) also return their noise. A method refusing this measurement or operator
    (``ValueError``) becomes one line naming it."""
    synchronize(y.device)
    start = time.perf_counter()
    separate = getattr(method, "separate", None)
    try:
        if separate is not None:
            x, noise = separate(y, physics, generator=generator)
        else:
            x, noise = method(y, physics, generator=generator), None
    except ValueError as err:
        raise ConfigError(f"{name}: {err}") from None
    synchronize(y.device)
    return x.detach(), None if noise is None else noise.detach(), time.perf_counter() - start


def run_methods(methods: dict[str, Method], y: torch.Tensor, physics: torch.nn.Module, truth: torch.Tensor,
                generator: torch.Generator, samples: int = 1, measure_memory: bool = False) -> dict[str, MethodResult]:
    """Run each method on ``y`` (batch 1), timing it and scoring it against ``truth``.

    Diffusion samplers (``nfe > 0``) draw ``samples`` posterior samples in one batch when
    ``samples > 1``; they are scored on the samples' mean (see :class:`MethodResult`).
    ``measure_memory`` adds ``peak_mib`` (:class:`recon.measure.PeakMemory`) to the metrics.
    Every method starts from ``generator``'s state at entry, so a method's draws do not depend on
    which others run before it (as in :mod:`recon.batch_job`): ``samplers=[dds,diffpir]`` gives
    the DiffPIR result of ``samplers=[diffpir]``.
    """
    if samples < 1:
        raise ConfigError(f"samples={samples}: expected a positive number of posterior samples")
    results: dict[str, MethodResult] = {}
    start = generator.get_state()
    for name, method in methods.items():
        generator.set_state(start)
        nfe = int(getattr(method, "nfe", 0))
        draws = samples if nfe > 0 else 1
        with PeakMemory(y.device) if measure_memory else nullcontext() as memory:
            x, noise, seconds = run_method(name, method, y.expand(draws, *y.shape[1:]).contiguous(), physics, generator)
        noise = None if noise is None else noise.mean(dim=0, keepdim=True)
        if draws > 1:
            mean, std = sample_statistics(x)
            result = MethodResult(mean, evaluate(mean, truth), std, x, noise)
            result.metrics["mean_std"] = float(std.mean())
        else:
            result = MethodResult(x, evaluate(x, truth), noise=noise)
        result.metrics.update(seconds=seconds, nfe=nfe)
        if measure_memory:
            result.metrics["peak_mib"] = memory.peak_mib
        results[name] = result
    return results


def sample_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(1, ...)`` and unbiased per-pixel standard deviation ``(1, ...)`` (real) of
    ``K >= 2`` draws ``x`` ``(K, ...)``; for complex draws ``std = sqrt(sum |x - mean|^2 / (K - 1))``."""
    mean = x.mean(dim=0, keepdim=True)
    std = ((x - mean).abs().square().sum(dim=0, keepdim=True) / (x.shape[0] - 1)).sqrt()
    return mean, std


def noise_estimates(case: Case, results: dict[str, MethodResult]) -> dict[str, torch.Tensor]:
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


class Engine:
    """One configured case, ready to run: ``Engine(cfg)`` resolves the device, seeds one generator
    with ``cfg.seed``, simulates the measurement and builds the methods (unless ``methods`` are
    given, e.g. reused across cases; a sampler whose prior learned another pixel size runs on that
    grid, :mod:`recon.grid`), so that every configuration or input error surfaces before any
    method runs; :meth:`run` then runs and scores each method."""

    def __init__(self, cfg: DictConfig, methods: dict[str, Method] | None = None, *,
                 device: torch.device | None = None, progress: bool = True):
        self.cfg = cfg
        self.device = device or resolve_device(str(cfg.device))
        self.generator = torch.Generator(device=self.device).manual_seed(int(cfg.seed))
        self.case = simulate(cfg, self.device, self.generator)
        self.methods = build_methods(cfg, self.device, progress=progress) if methods is None else methods
        source = self.case.source
        self.methods = on_prior_grid(self.methods, self.case.truth, float(source.pixel_size_cm))
        warn_anisotropic(self.methods, self.case.truth, float(source.pixel_size_cm),
                         getattr(source, "slice_thickness_cm", None))
        if not self.methods:
            raise ConfigError("nothing to run: no baselines and no sampler configured")

    def run(self, measure_memory: bool = False) -> Outcome:
        """Run and score every method (``cfg.samples`` posterior draws for samplers) and the
        structured-noise estimates. Nothing is written to disk (:mod:`recon.report` does that)."""
        case = self.case
        results = run_methods(self.methods, case.y, case.physics, case.truth, self.generator,
                              samples=int(self.cfg.get("samples", 1)), measure_memory=measure_memory)
        return Outcome(case, results, noise_estimates(case, results))
