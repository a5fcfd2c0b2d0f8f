"""Loading Hydra configs from ``configs/`` with command-line overrides.

The compose API is used instead of ``@hydra.main`` so that every failure (unknown key,
unknown group option, bad syntax, missing value) becomes one :class:`ConfigError` line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

CONFIG_ENV = "RECON_CONFIG_DIR"


def config_dir() -> Path:
    """The configs folder: ``$RECON_CONFIG_DIR`` or the repository's ``configs/``."""
    env = os.environ.get(CONFIG_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "configs"
    if not (path / "config.yaml").is_file():
        raise ConfigError(
            f"{path}: no config.yaml here; install recon from its repository (pip install -e .) "
            f"or point {CONFIG_ENV} at its configs/ folder"
        )
    return path


def load_config(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    """Compose ``config_name`` with ``overrides``; includes the ``hydra`` node (run dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_first_line(err)) from None
    missing = sorted(OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    if missing:
        raise ConfigError(f"missing value for {', '.join(missing)} (set it with {missing[0]}=...)")
    return cfg


def job_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` without the ``hydra`` node, resolved: what a run used, for saving."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    # Hydra puts the useful detail ("Key 'x' is not in struct") on the second line.
    detail = next((line for line in lines[1:] if "not in struct" in line or "Available options" in line), "")
    return f"{lines[0]} {detail}".strip()
