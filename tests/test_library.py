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


def printed_db(printed: str) -> list[float]:
    return [float(value) for value in re.findall(r"(-?\d+\.\d) dB", printed)]


def check_prior_snippet(ns: dict, printed: str) -> None:
    """The card names resolution, channels, units, training data, steps and the weights' path."""
    card = ns["available_priors"]()["ct-phantom-128"]
    assert printed.strip() == str(card)
    assert (card["resolution"], card["channels"], card["units"]) == (128, 1, "1/cm")
    assert card["training_steps"] > 0 and card["data"]["split"] == "train"
    assert Path(card["path"]).is_file() and Path(card["path"]).name == "ct-phantom-128.safetensors"
    prior, x = ns["prior"], torch.rand(2, 1, 8, 8) * 0.5  # 1/cm
    assert isinstance(prior, priors.DiffusionPrior)
    torch.testing.assert_close(prior.decode(prior.encode(x)), x)


def check_reconstruct_snippet(ns: dict, printed: str) -> None:
    """Shapes, an adjoint operator, and DDS well above FBP (measured: FBP 24.0 dB, DDS 30.7 dB)."""
    A, x, y, x_hat = ns["A"], ns["x"], ns["y"], ns["x_hat"]
    assert x.shape == x_hat.shape == (1, 1, 64, 64) and y.shape == (1, *A.out_shape) == (1, 1, 16, 92)
    g = torch.Generator().manual_seed(1)
    assert operators.adjoint_error(A, A.adjoint, torch.randn(x.shape, generator=g),
                                   torch.randn(y.shape, generator=g)) < 1e-5
    fbp, dds = recon.psnr(recon.FBP("hann")(y, A), x), recon.psnr(x_hat, x)
    assert printed_db(printed) == [round(float(fbp), 1), round(float(dds), 1)]
    assert dds > 28 and dds > fbp + 4


def check_structured_noise_snippet(ns: dict, printed: str) -> None:
    """The joint sampler well above the white-noise model (measured: 26.9 dB against 31.0 dB;
    the README's 10-phantom mean gap is 8.0 dB) and a noise estimate shaped like ``y``."""
    x, y, x_hat, n_hat, white = ns["x"], ns["y"], ns["x_hat"], ns["n_hat"], ns["white"]
    assert x_hat.shape == white.shape == x.shape and n_hat.shape == y.shape == (1, 1, 128, 128)
    joint, plain = recon.psnr(x_hat, x), recon.psnr(white, x)
    assert printed_db(printed) == [round(float(plain), 1), round(float(joint), 1)]
    assert joint > 29 and joint > plain + 2.5


def check_noncartesian_snippet(ns: dict, printed: str) -> None:
    """Shapes, an adjoint operator, and the printed gridding PSNR (measured 28.2 dB)."""
    A, x, y, x_grid = ns["A"], ns["x"], ns["y"], ns["x_grid"]
    assert x.shape == x_grid.shape == (1, 1, 256, 256) and y.shape == (1, 8, 64, 512)
    g = torch.Generator().manual_seed(1)
    assert operators.adjoint_error(A, A.adjoint, torch.randn(x.shape, generator=g, dtype=torch.complex64),
                                   torch.randn(y.shape, generator=g, dtype=torch.complex64)) < 1e-5
    gridding = recon.psnr(x_grid, x)
    assert printed_db(printed) == [round(float(gridding), 1)] and 27 < gridding < 30


def check_perpendicular_snippet(ns: dict, printed: str) -> None:
    """A 32-slice slab at the wedge through both bundled 3D priors, scored as printed (measured 23.6 dB;
    the slab's FBP is far lower)."""
    A, truth, y, x = ns["A"], ns["truth"], ns["y"], ns["x"]
    assert x.shape == truth.shape == (1, 1, 32, 128, 128) and y.shape == (1, *A.out_shape)
    score = recon.psnr(x, truth)
    assert printed_db(printed) == [round(float(score), 1)] and score > 22


# Each README snippet is recognised by a call it makes and checked for what the README says of it.
README_CHECKS = {"available_priors(": check_prior_snippet, "JointSampler(": check_structured_noise_snippet,
                 "reconstruct(": check_reconstruct_snippet, "NonCartesianMRI(": check_noncartesian_snippet,
                 "Perpendicular(": check_perpendicular_snippet}
SLOW_SNIPPETS = ("JointSampler(", "Perpendicular(")  # about a minute each alone on the 2 cores


# The structured-noise snippet samples 128 x 128 twice at 40 steps, the 3D one 32 slices of 128^2 at
# 10 steps: ~1 min each alone on 2 cores.
@pytest.mark.parametrize("index", [pytest.param(i, marks=[pytest.mark.slow] if any(c in source for c in SLOW_SNIPPETS)
                                                else []) for i, source in enumerate(python_blocks(ROOT / "README.md"))])
def test_readme_python_snippets_run(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = python_blocks(ROOT / "README.md")[index]
    checks = [check for call, check in README_CHECKS.items() if call in source][:1]
    assert checks, f"README python snippet {index} has no check of its results: add one to README_CHECKS"
    namespace: dict = {}
    exec(compile(source, f"README.md[python {index}]", "exec"), namespace)
    checks[0](namespace, capsys.readouterr().out)


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


@pytest.mark.slow  # DPS on a nonlinear model at 48 x 48: backpropagation through the network at every step
def test_example_custom_operator():
    scores = load_example("custom_operator").main(["--size", "48", "--steps", "20"])
    assert scores["dds (custom linear)"] > scores["blurred"] + 3
    assert scores["dps (nonlinear)"] > 15


@pytest.mark.slow  # simulates a 256 x 256 4-coil file, then the example script end to end
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
