"""Build what a configuration names: the device, the prior, and the methods (baselines, samplers).

A *method* is any callable ``method(y, physics, generator=g) -> x`` with an ``nfe`` attribute
(network evaluations; 0 for classical baselines). Library code raises ``ValueError`` /
``TypeError``; here such failures become one-line :class:`~recon.errors.ConfigError` messages
that name the config key.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, ReconError

__all__ = ["Method", "WithProgress", "build_methods", "build_prior", "instantiate", "resolve_device"]

Method = Callable[..., torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    Pure: no process state changes (the CPU allocator setting is the command line's own step,
    :func:`recon.allocator.reuse_freed_memory`)."""
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
    return torch.device(name)


def instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures (the library's ``ValueError``/``TypeError``
    included) become one line naming the config key."""
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
                compile: bool | str = False, key: str = "prior") -> Any:
    """The configured prior: ``prior.checkpoint`` (a path) or the bundled ``prior.name``;
    ``prior.scale`` (optional) replaces the card's normalisation scale (physical units per
    model unit), for data in other units than the prior was trained on; ``precision``
    (fp32 | bf16 | fp16) sets the network's arithmetic (autocast); ``compile`` (``True`` for
    inductor, or a ``torch.compile`` backend name) compiles the network
    (:meth:`priors.DiffusionPrior.compile`). Errors name ``key`` (the config key of ``node``)."""
    from priors import CheckpointError, load_prior

    if not (node.get("checkpoint") or node.get("name")):
        raise ConfigError(f"{key}: name a bundled prior ({key}.name=...) or a checkpoint ({key}.checkpoint=PATH)")
    try:
        prior = load_prior(node.get("checkpoint") or node.get("name"), card=node.get("card"))
    except CheckpointError as err:
        raise ConfigError(f"{key}: {err}") from None
    if node.get("scale") is not None:
        if float(node.scale) <= 0:
            raise ConfigError(f"{key}.scale={node.scale}: must be > 0")
        prior.normalization = replace(prior.normalization, scale=float(node.scale))
    try:
        prior.precision = str(precision)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    prior = prior.to(device)
    if compile not in (False, None, "false"):
        prior.compile("inductor" if compile in (True, "true") else str(compile))
    return prior


def sampler_nodes(cfg: DictConfig) -> dict[str, tuple[DictConfig, str]]:
    """Every sampler a config declares, name -> (its ``_target_`` config, its config key): the
    entries of the ``samplers`` map, chosen like baselines (``samplers=[dds_ct]``, ``samplers=[]``;
    each option of the ``samplers`` group adds one entry) and set with ``samplers.NAME.KEY=...``."""
    return {str(name): (node, f"samplers.{name}") for name, node in (cfg.get("samplers") or {}).items()}


def build_methods(cfg: DictConfig, device: torch.device, progress: bool = True) -> dict[str, Method]:
    """Baselines first, then every sampler (:func:`sampler_nodes`), keyed by their names; the
    samplers share the configured prior (a sampler's ``perpendicular_prior:`` block, a prior config
    like ``prior``, builds its second prior). ``progress``: samplers drive a progress bar (stderr)."""
    methods: dict[str, Method] = {}
    for name, node in (cfg.get("baselines") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"baselines.{name}: no _target_ (settings without a baseline config; "
                              f"choose one with baselines=[...])")
        methods[str(name)] = instantiate(node, f"baselines.{name}")
    samplers = sampler_nodes(cfg)
    if samplers and cfg.get("prior") is None:
        raise ConfigError(f"sampler {next(iter(samplers))} needs a prior (prior=...)")
    prior = (build_prior(cfg.prior, device, str(cfg.get("precision", "fp32")), cfg.get("compile", False))
             if samplers else None)
    for name, (node, key) in samplers.items():
        adapt = node.get("adapt")  # Steerable Conditional Diffusion around the sampler (recon.samplers.steerable)
        second = node.get("perpendicular_prior")  # a second prior (recon.samplers.Perpendicular): a prior config
        if adapt is not None or second is not None:  # resolved first: ${chunk} and the like need the whole config
            node = OmegaConf.create({k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
                                     if k not in ("adapt", "perpendicular_prior")})
        extra = {} if second is None else {"perpendicular_prior": build_prior(
            second, device, str(cfg.get("precision", "fp32")), cfg.get("compile", False), f"{key}.perpendicular_prior")}
        sampler = instantiate(node, key, prior=prior, **extra)
        if adapt is not None:
            sampler = steer(sampler, adapt, f"{key}.adapt")
        methods[name] = WithProgress(sampler, name) if progress else sampler
    return methods


def steer(sampler: Any, adapt: DictConfig, key: str) -> Any:
    """``sampler`` wrapped in :class:`~recon.samplers.Steerable` with the ``adapt`` settings
    (``rank``, ``steps``, ``lr``, ``every``, ...); a bad setting is one line naming ``key``."""
    from .samplers import Steerable

    if not isinstance(adapt, DictConfig):
        raise ConfigError(f"{key}: expected settings such as {{rank: 4, steps: 2, lr: 1e-3, every: 10}}, got {adapt}")
    try:
        return Steerable(sampler, **OmegaConf.to_container(adapt, resolve=True))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from None


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
