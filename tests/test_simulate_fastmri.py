"""The fastMRI simulator writes files that read back through recon.io.fastmri consistently."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from operators import ifft2c
from recon.io.fastmri import center_crop, read_fastmri, rss

pytest.importorskip("nilearn")
pytest.importorskip("sigpy")

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "simulate_fastmri.py"


def load_script():
    spec = importlib.util.spec_from_file_location("simulate_fastmri", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_volume_round_trip(tmp_path):
    sim = load_script()
    argv = ["--out", str(tmp_path), "--num-files", "2", "--seed", "5", "--coils", "4", "--slices", "2",
            "--size", "32", "--slices-from", "60", "--slices-to", "70", "--slice-step", "3"]
    assert sim.main(argv) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [f["file"] for f in manifest["files"]] == ["sim_brain_s5_0000.h5", "sim_brain_s5_0001.h5"]

    volume = read_fastmri(tmp_path / "sim_brain_s5_0000.h5")
    assert volume.kspace_shape == (2, 4, 64, 32)
    assert volume.encoding_size == (64, 32, 1) and volume.recon_size == (32, 32, 1)
    entry = manifest["files"][0]
    assert volume.attrs["slices_from"] == entry["slices_from"] >= 60
    assert volume.attrs["slices_to"] == entry["slices_to"] <= 70 and entry["slice_step"] == 3
    assert volume.attrs["acquisition"] == "AXT1"
    targets = np.stack([volume.target(i) for i in range(volume.num_slices)])
    assert volume.attrs["max"] == pytest.approx(float(targets.max()))
    for i in range(volume.num_slices):
        image = rss(ifft2c(torch.from_numpy(volume.kspace(i))), dim=0)
        assert np.allclose(center_crop(image, volume.crop_size).numpy(), targets[i], rtol=1e-5, atol=1e-6)
    # the object lies inside the recon FOV: the oversampled rows outside it hold only noise
    full = rss(ifft2c(torch.from_numpy(volume.kspace(0))), dim=0)
    assert full[:12].max() < 0.05 * targets.max() and targets.max() > 0.5

    assert sim.main(argv) == 1  # refuses to overwrite without --overwrite


def test_slab_range_must_fit():
    sim = load_script()
    with pytest.raises(SystemExit):
        sim.parse_args(["--out", "x", "--num-files", "1", "--slices", "8", "--slices-from", "100",
                        "--slices-to", "105"])
