"""task=inpainting and task=super_resolution end to end; samples=K; the bicubic baseline."""

import functools
import json

import numpy as np
import pytest
import torch

from operators import Downsampling, GaussianBlur, downsampling, identity, inpainting, parallel_beam_ct
from operators.volume import parallel_beam_ct3d
from recon.app import main
from recon.baselines import Bicubic
from recon.data.mri_sources import MRISlice, sense_operator
from recon.data.sources import GroundTruth, accepted_inputs

FAST = ["data.size=64", "samplers.dds.steps=10", "baselines.tv.iterations=1000", "seed=2"]


def run(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    assert main(["run", f"hydra.run.dir={run_dir}", *FAST, *overrides]) == 0
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def zero_filled_psnr(run_dir) -> float:
    truth = np.load(run_dir / "ground_truth.npy")
    y = np.load(run_dir / "measurement.npy")
    return float(10 * np.log10(truth.max() ** 2 / np.mean((y - truth) ** 2)))


@pytest.mark.parametrize("mask,fraction,gain", [("random_pixel", 0.7, 3.0), ("box", 0.25, 1.0)])
def test_inpainting_task_beats_the_masked_measurement(tmp_path, mask, fraction, gain):
    run_dir, report = run(tmp_path, mask, "task=inpainting", f"operator.mask={mask}",
                          f"operator.missing_fraction={fraction}")
    assert report["task"] == "inpainting" and set(report["methods"]) == {"tv", "dds"}
    floor = zero_filled_psnr(run_dir)
    for name in ("tv", "dds"):
        assert report["methods"][name]["psnr"] > floor + gain, (name, report["methods"][name], floor)
    assert (run_dir / "panel.png").stat().st_size > 0


def test_super_resolution_task(tmp_path):
    run_dir, report = run(tmp_path, "sr", "task=super_resolution")
    assert set(report["methods"]) == {"bicubic", "tv", "dds"}
    assert np.load(run_dir / "measurement.npy").shape == (1, 1, 16, 16)
    assert np.load(run_dir / "recon_dds.npy").shape == (1, 1, 64, 64)
    for m in report["methods"].values():
        assert m["psnr"] > 18 and m["ssim"] > 0.4, report["methods"]  # 10 DDS steps at 64 px: a smoke test


def test_samples_write_mean_std_and_draws(tmp_path):
    run_dir, report = run(tmp_path, "k", "task=inpainting", "samples=3")
    samples = np.load(run_dir / "samples_dds.npy")
    std = np.load(run_dir / "std_dds.npy")
    mean = np.load(run_dir / "recon_dds.npy")
    assert samples.shape == (3, 1, 64, 64) and std.shape == mean.shape == (1, 1, 64, 64)
    assert np.allclose(mean, samples.mean(0, keepdims=True), atol=1e-6)
    assert np.allclose(std, samples.std(0, ddof=1, keepdims=True), atol=1e-6)
    assert not np.array_equal(samples[0], samples[1]), "draws must differ"
    assert report["methods"]["dds"]["mean_std"] == pytest.approx(float(std.mean()), rel=1e-5)
    assert "mean_std" not in report["methods"]["tv"] and not (run_dir / "std_tv.npy").exists()
    assert (run_dir / "std_dds.nii.gz").is_file()


def test_bad_samples_and_mask_are_one_line_errors(tmp_path, capsys):
    assert main(["run", f"hydra.run.dir={tmp_path / 'a'}", "task=inpainting", "samples=0"]) == 2
    assert "samples=0" in capsys.readouterr().err
    assert main(["run", f"hydra.run.dir={tmp_path / 'b'}", "task=inpainting", "operator.mask=circle"]) == 2
    err = capsys.readouterr().err
    assert "operator" in err and "circle" in err and len(err.strip().splitlines()) == 1


def test_bicubic_on_another_operator_is_a_one_line_error_named_by_the_app(tmp_path, capsys):
    assert main(["run", f"hydra.run.dir={tmp_path}", "data.size=64", "task=inpainting", "baselines=[bicubic]",
                 "samplers=[]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bicubic" in err and "Downsampling physics, got Inpainting" in err, err


def test_data_sources_give_each_operator_factory_only_its_arguments():
    image = GroundTruth(torch.zeros(1, 1, 32, 32), 0.25, "flat")
    assert image.operator_inputs(identity) == image.operator_inputs(inpainting) == {"image_size": 32}
    assert image.operator_inputs(downsampling) == {"image_size": 32}
    assert image.operator_inputs(parallel_beam_ct) == {"image_size": 32, "pixel_size": 0.25}
    assert image.operator_inputs(functools.partial(inpainting, mask="box")) == {"image_size": 32}  # hydra _partial_
    assert image.operator_inputs(lambda image_size, **rest: None) == image.operator_inputs()  # **kwargs takes all
    volume = GroundTruth(torch.zeros(1, 1, 6, 32, 32), 0.5, "flat", slice_thickness_cm=0.4)
    assert volume.operator_inputs(parallel_beam_ct3d) == {"image_size": 32, "pixel_size": 0.5, "depth": 6}
    assert volume.operator_inputs(identity) == {"image_size": 32}
    scan = MRISlice(torch.zeros(1, 1, 8, 12, dtype=torch.complex64), 0.1, "flat", maps=torch.ones(2, 8, 12))
    assert scan.operator_inputs(sense_operator) == {"shape": (8, 12), "maps": scan.maps, "kspace": None}
    assert accepted_inputs({"shape": (8, 12), "depth": 3}, identity) == {}
    for factory in (identity, inpainting, downsampling):  # no factory takes an argument it does not use
        with pytest.raises(TypeError, match="pixel_size"):
            factory(32, pixel_size=0.25)


def test_operator_factories():
    op = inpainting(32, "box", 0.25, seed=1)
    assert op.in_shape == (1, 32, 32) and float(1 - op.mask.mean()) == pytest.approx(0.25, abs=0.02)
    assert torch.equal(inpainting(32, "stroke", 0.2, seed=4).mask, inpainting(32, "stroke", 0.2, seed=4).mask)
    down = downsampling(32, factor=4)
    assert isinstance(down, Downsampling) and down.out_shape == (1, 8, 8)


def test_bicubic_recovers_smooth_images_and_needs_downsampling():
    n = 64
    grid = (torch.arange(n) + 0.5) / n
    smooth = (1.5 + torch.cos(2 * torch.pi * grid)[:, None] * torch.sin(2 * torch.pi * grid)[None])[None, None]
    physics = Downsampling((1, n, n), 4)
    x = Bicubic()(physics(smooth), physics)
    assert x.shape == smooth.shape
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # borders: edge padding, not periodic
    assert float((x - smooth)[inner].abs().max()) < 0.025  # of a range of 2 (measured 0.020)
    nearest = physics.adjoint(physics(smooth)) * 16
    assert float((x - smooth)[inner].abs().max()) < 0.2 * float((nearest - smooth)[inner].abs().max())  # 0.15
    with pytest.raises(ValueError, match="Downsampling physics, got GaussianBlur"):  # the library's error
        Bicubic()(smooth, GaussianBlur((1, n, n), 1.0))
