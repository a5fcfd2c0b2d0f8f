"""The package list in pyproject.toml covers every package folder, and the configs ship inside it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from recon.config import CONFIG_PACKAGE, config_root, load_config

ROOT = Path(__file__).resolve().parents[1]


def _settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    settings = _settings()
    mapped = {path: name for name, path in settings["package-dir"].items()}
    found = set()
    for init in ROOT.glob("*/**/__init__.py"):
        folder = init.parent.relative_to(ROOT).as_posix()
        if folder.split("/")[0] in {"recon", "operators", "priors"} or folder in mapped:
            found.add(mapped.get(folder, folder.replace("/", ".")))
    assert found == set(settings["packages"]), "pyproject.toml [tool.setuptools] packages is out of date"


def test_every_config_file_is_package_data():
    patterns = _settings()["package-data"][CONFIG_PACKAGE]
    configs = ROOT / "configs"
    yaml_files = {p.relative_to(configs) for p in configs.rglob("*.yaml")}
    shipped = {p.relative_to(configs) for pattern in patterns for p in configs.glob(pattern)}
    assert yaml_files and yaml_files == shipped


def test_configs_load_from_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv("RECON_CONFIG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # any folder: nothing is looked up relative to the working directory
    assert config_root().joinpath("config.yaml").is_file()
    assert load_config(["task=ct3d_sparse"]).task.name == "ct3d_sparse"
