"""``python -m recon run task=mri_radial | mri_spiral``: simulated held-out slices, the baselines on the trajectory, the factory's errors."""

from __future__ import annotations

import json

import pytest
import torch

from operators import NonCartesianMRI, birdcage_maps, golden_angle_radial
from recon.app import main
from recon.data.noncartesian import noncartesian_operator
from recon.errors import ConfigError

pytest.importorskip("sigpy")

FAST = ["device=cpu", "data.size=64", "samplers=[]", "baselines.l1_wavelet.iterations=30"]


@pytest.mark.parametrize(("task", "extra"), [("mri_radial", ["operator.trajectory.spokes=24"]),
                                             ("mri_spiral", ["operator.trajectory.interleaves=8"])])
def test_task_runs_the_baselines_on_the_trajectory(tmp_path, task, extra):
    run_dir = tmp_path / task
    assert main(["run", f"task={task}", *FAST, *extra, f"hydra.run.dir={run_dir}"]) == 0
    methods = json.loads((run_dir / "metrics.json").read_text())["methods"]
    assert list(methods) == ["gridding", "cg_sense", "l1_wavelet"]
    # density-weighted CG-SENSE and L1-wavelet improve on gridding (measured at 64 px with 30 L1
    # iterations, gridding / CG-SENSE / L1-wavelet: radial 24 spokes 25.2 / 34.2 / 35.7 dB, SSIM of
    # L1 0.89; spiral 8 arms 17.5 / 33.1 / 33.1 dB, SSIM 0.85); L1-wavelet's SSIM leads CG-SENSE's
    assert methods["cg_sense"]["psnr"] > methods["gridding"]["psnr"] + 6
    assert methods["l1_wavelet"]["psnr"] > methods["gridding"]["psnr"] + 6
    assert methods["l1_wavelet"]["ssim"] > methods["cg_sense"]["ssim"] + 0.15
    y = torch.from_numpy(__import__("numpy").load(run_dir / "measurement.npy"))
    assert y.is_complex() and y.shape[:2] == (1, 8)


def test_factory_estimates_maps_from_the_scan_or_says_what_it_needs():
    shape, traj = (48, 48), {"kind": "radial", "spokes": 32}
    with pytest.raises(ConfigError, match="needs coil maps"):
        noncartesian_operator(shape, traj)
    with pytest.raises(ConfigError, match="needs coil maps"):  # a Cartesian k-space is not the scan's samples
        noncartesian_operator(shape, traj, kspace=torch.zeros(1, 4, 48, 48, dtype=torch.complex64))
    with pytest.raises(ConfigError, match="analytic is for radial"):
        noncartesian_operator(shape, {"kind": "spiral", "interleaves": 4}, maps=birdcage_maps(2, shape))
    with pytest.raises(ConfigError, match="valid kinds"):
        noncartesian_operator(shape, {"kind": "rosette"}, maps=birdcage_maps(2, shape))
    yy, xx = torch.meshgrid(torch.arange(48) - 24, torch.arange(48) - 24, indexing="ij")
    image = ((yy / 18) ** 2 + (xx / 15) ** 2 < 1).to(torch.complex64)[None, None]
    truth = birdcage_maps(4, shape)
    samples = NonCartesianMRI(truth, golden_angle_radial(32, 96))(image)
    op = noncartesian_operator(shape, traj, kspace=samples, calib_width=16)
    inside = image[0, 0].abs() > 0
    assert float((op.sens_maps[0].conj() * truth).sum(0).abs()[inside].min()) > 0.95


@pytest.mark.parametrize(("task", "cg", "precondition"), [("mri_radial", 20, True), ("mri_spiral", 20, True),
                                                          ("mri_multicoil", 10, False)])
def test_mri_tasks_default_to_diffpir_with_the_settings_chosen_on_training_slices(task, cg, precondition):
    """DiffPIR-100 with quad timesteps (benchmarks/RESULTS.md, training slices: radial 42.28 / 37.79 dB
    at 64 / 32 spokes against 41.77 / 37.12 uniform; Cartesian 35.58 against 34.53), 20 preconditioned
    CG iterations for non-Cartesian sampling."""
    from recon.config import load_config

    diffpir = load_config([f"task={task}"]).samplers.diffpir
    assert diffpir["_target_"] == "recon.samplers.DiffPIR"
    chosen = (diffpir.cg_iterations, diffpir.precondition, diffpir.spacing, diffpir.sigma)
    assert chosen == (cg, precondition, "quad", 0.01)
