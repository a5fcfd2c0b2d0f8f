"""The library surface: README snippets and examples run, reconstruct(), light imports, API docs."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import operators
import priors
import recon
from operators import MatrixOperator
from priors import GaussianPrior
from recon import reconstruct

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks(ROOT / "README.md"))))
def test_readme_python_snippets_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks(ROOT / "README.md")[index], f"README.md[python {index}]", "exec"), {})


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_ct_own_sinogram(tmp_path):
    import numpy as np

    scores = load_example("ct_own_sinogram").main(["--size", "64", "--steps", "20", "--pixel-size", str(25 / 64)])
    assert scores["dds"] > scores["fbp"] + 3
    # and from files, as a user would call it
    A = operators.ParallelBeamCT(64, np.arange(8) * np.pi / 8, pixel_size=0.4)
    np.save(tmp_path / "sino.npy", A(torch.rand(1, 1, 64, 64) * 0.3)[0, 0].numpy())
    np.save(tmp_path / "angles.npy", np.arange(8) * np.pi / 8)
    load_example("ct_own_sinogram").main(["--sinogram", str(tmp_path / "sino.npy"), "--angles",
                                          str(tmp_path / "angles.npy"), "--size", "64", "--steps", "5",
                                          "--pixel-size", "0.4", "--out", str(tmp_path / "x.npy")])
    assert np.load(tmp_path / "x.npy").shape == (64, 64)


def test_example_custom_operator():
    scores = load_example("custom_operator").main(["--size", "48", "--steps", "20"])
    assert scores["dds (custom linear)"] > scores["blurred"] + 3
    assert scores["dps (nonlinear)"] > 15


def test_example_fastmri_slice(tmp_path):
    pytest.importorskip("nilearn")
    sys.path.insert(0, str(ROOT / "data_scripts"))
    try:
        from simulate_fastmri import main as simulate
    finally:
        sys.path.remove(str(ROOT / "data_scripts"))
    assert simulate(["--out", str(tmp_path), "--num-files", "1", "--coils", "4", "--slices", "1", "--size", "256",
                     "--slices-from", "120", "--slices-to", "130"]) == 0
    scores = load_example("fastmri_slice").main([str(tmp_path / "sim_brain_s0_0000.h5"), "--steps", "5"])
    assert scores["cg_sense"]["psnr"] > 28 and scores["l1_wavelet"]["psnr"] > 28  # 31.9 and 32.3 measured


def test_reconstruct_on_a_batch_with_a_user_operator_and_errors():
    g = torch.Generator().manual_seed(0)
    prior = GaussianPrior(torch.zeros(6), torch.eye(6, dtype=torch.float64))
    A = MatrixOperator(torch.randn(3, 6, generator=g), in_shape=(1, 6))
    y = torch.randn(5, 3, generator=g)
    for sampler in ("dds", "dps", "red_diff"):
        x = reconstruct(y, A, prior, sampler, steps=10, generator=torch.Generator().manual_seed(1))
        assert x.shape == (5, 1, 6) and torch.isfinite(x).all()
    again = reconstruct(y, A, prior, "dds", steps=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, reconstruct(y, A, prior, "dds", steps=10, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(TypeError, match="LinearOperator"):
        reconstruct(y, lambda x: A(x) ** 2, prior, "dds")
    with pytest.raises(ValueError, match="unknown sampler"):
        reconstruct(y, A, prior, "ddim")
    x = reconstruct(y, lambda x: A(x).tanh(), prior, "dps", steps=5, operator_norm=1.0,
                    x_init=torch.zeros(1, 1, 6), generator=g)
    assert x.shape == (5, 1, 6)


def test_public_surface_is_declared():
    for package in (operators, priors, recon):
        assert package.__all__ and all(hasattr(package, name) for name in package.__all__)
        assert (Path(package.__file__).parent / "py.typed").is_file()
    assert {"reconstruct", "DDS", "DPS", "REDDiff", "FBP", "TV"} <= set(recon.__all__)
    assert {"load_prior", "available_priors", "from_guided_diffusion", "DiffusionPrior"} <= set(priors.__all__)


def test_import_does_not_load_hydra_matplotlib_sigpy_or_astra():
    code = ("import sys, recon, operators, priors; "
            "print(sorted(m for m in ('hydra', 'omegaconf', 'matplotlib', 'sigpy', 'astra', 'h5py', 'nibabel') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_api_reference_builds_offline(tmp_path):
    pytest.importorskip("pdoc")
    result = subprocess.run([sys.executable, "-m", "pdoc", "operators", "priors", "recon", "-o", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for package in ("operators", "priors", "recon"):
        assert (tmp_path / f"{package}.html").is_file()
    assert "reconstruct" in (tmp_path / "recon.html").read_text()
    assert "load_prior" in (tmp_path / "priors.html").read_text()
