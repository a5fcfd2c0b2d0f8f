"""Loading Hydra configs (the package ``recon.configs``) with command-line overrides.

The compose API is used instead of ``@hydra.main`` so that every failure (unknown key,
unknown group option, bad syntax, missing value) becomes one :class:`ConfigError` line.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

CONFIG_ENV = "RECON_CONFIG_DIR"
CONFIG_PACKAGE = "recon.configs"


def config_root() -> "Traversable":
    """The configs: ``$RECON_CONFIG_DIR`` (a folder) or the installed package ``recon.configs``
    (the repository's ``configs/``, shipped inside the package by ``pip install .``)."""
    env = os.environ.get(CONFIG_ENV)
    root: Traversable = Path(env) if env else resources.files(CONFIG_PACKAGE)
    if not root.joinpath("config.yaml").is_file():
        where = f"{CONFIG_ENV}={env}" if env else f"package {CONFIG_PACKAGE} ({root})"
        raise ConfigError(f"{where}: no config.yaml there; point {CONFIG_ENV} at a folder holding recon's configs")
    return root


def load_config(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    """Compose ``config_name`` with ``overrides``; includes the ``hydra`` node (run dir)."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    root = config_root()

    def composed(items: Sequence[str]) -> DictConfig:
        initialize = (initialize_config_dir(config_dir=str(Path(str(root)).resolve()), version_base="1.3")
                      if isinstance(root, Path) else initialize_config_module(CONFIG_PACKAGE, version_base="1.3"))
        with initialize:
            return compose(config_name, overrides=list(items), return_hydra_config=True)

    errors = (HydraException, OmegaConfBaseException, ValueError)  # ValueError: Hydra's override checks
    try:
        cfg = composed(overrides)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        OmegaConf.to_container(job, resolve=True)  # every interpolation resolves (${oops} fails here, not later)
        missing = sorted(OmegaConf.missing_keys(job))
    except errors as err:
        message, key = _first_line(err), _unoverridable_key(str(err))
        if key:  # say what is there instead: "(samplers has no 'dds'; it has: diffpir)"
            try:
                message += _absent_key_hint(composed([o for o in overrides if o.split("=", 1)[0] != key]), key)
            except errors:
                pass
        raise ConfigError(message) from None
    if missing:
        raise ConfigError(f"missing value for {', '.join(missing)} (set it with {missing[0]}=...)")
    seed = job.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be a whole number in [0, 2^63), got {seed!r}")
    return cfg


def job_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` without the ``hydra`` node, resolved: what a run used, for saving."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


def _unoverridable_key(message: str) -> str | None:
    """``samplers.dds.steps`` from Hydra's "Could not override 'samplers.dds.steps'." (else None)."""
    prefix = "Could not override '"
    return message[len(prefix):].split("'", 1)[0] if message.startswith(prefix) else None


def _absent_key_hint(cfg: DictConfig, key: str) -> str:
    """`` (samplers has no 'dds'; it has: diffpir)``: the deepest part of ``key`` that ``cfg`` holds,
    and what it holds there (a task whose samplers differ, a misspelt setting)."""
    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return ""
        if part not in node:
            where = ".".join(parts[:depth]) or "the config"
            names = [str(k) for k in node.keys() if k != "hydra"]
            listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            return f" ({where} has no '{part}'; it has: {listed or 'nothing'})"
        node = node[part]
    return ""


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    # Hydra puts the useful detail ("Key 'x' is not in struct") on the second line.
    detail = next((line for line in lines[1:] if "not in struct" in line or "Available options" in line), "")
    return f"{lines[0]} {detail}".strip()
