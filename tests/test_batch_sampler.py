"""``python -m recon batch`` with a diffusion sampler: the bundled MRI prior through DDS, seeded per volume."""

import json
import shutil

import h5py
import numpy as np
import pytest
from fastmri_files import simulate

from recon.app import main

pytest.importorskip("sigpy")

DDS = ["prior=mri_brain", "samplers=dds_mri", "samplers.dds.steps=10", "baselines=[zero_filled]",
       "mask.center_fraction=0.2", "operator.kernel_width=4", "device=cpu", "batch_size=2"]


@pytest.mark.slow
def test_batch_runs_a_diffusion_sampler_seeded_per_volume(tmp_path):
    files = simulate(tmp_path / "in", slices=2)
    assert main(["batch", f"data.root={tmp_path / 'in'}", f"output={tmp_path / 'out'}", *DDS]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    dds, zero_filled = summary["methods"]["dds"], summary["methods"]["zero_filled"]
    assert dds["volumes"] == dds["scored"] == 2 and not summary["failed"]
    # DDS-10 with the MRI prior beats the zero-filled image on these simulated brain slices
    # (measured with 2 files of 2 slices: +3.3 dB PSNR, +0.061 SSIM).
    assert dds["psnr"] > zero_filled["psnr"] + 2.0 and dds["ssim"] > zero_filled["ssim"] + 0.03
    record = json.loads((tmp_path / "out" / "per_volume" / "dds" / f"{files[1].stem}.json").read_text())
    assert record["slices"] == 2 and record["seconds"] > 0

    # The second file alone gives the same DDS volume: every volume starts from seed, whatever ran before.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(files[1], alone / files[1].name)
    assert main(["batch", f"data.root={alone}", f"output={tmp_path / 'out_alone'}", *DDS]) == 0
    with h5py.File(tmp_path / "out" / "dds" / files[1].name) as a, \
            h5py.File(tmp_path / "out_alone" / "dds" / files[1].name) as b:
        first, second = a["reconstruction"][()], b["reconstruction"][()]
    assert first.shape == (2, 48, 48) and np.abs(first).max() > 0
    np.testing.assert_array_equal(first, second)
