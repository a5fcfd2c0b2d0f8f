"""Crash anywhere, resume to the same result: SIGKILLed ``recon batch`` and ``recon train`` runs
leave no partial file under a final name and, rerun, equal an uninterrupted run
(``benchmarks/kill_resume.py``, which the full 50-kill figures in RESULTS.md come from)."""

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("sigpy")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_resume.py"
spec = importlib.util.spec_from_file_location("kill_resume", SCRIPT)
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)

# one slice per file; baselines and a 2-step seeded DDS; a 4-step training checkpointed every step
BATCH = ["mask.center_fraction=0.2", "operator.kernel_width=4", "baselines.l1_wavelet.iterations=5",
         "device=cpu", "batch_size=1", "prior=mri_brain", "samplers=dds_mri", "samplers.dds.steps=2"]
TRAIN = ["prior.data.count=4", "prior.data.size=32", "train.steps=4", "train.batch_size=2", "train.crop=32",
         "train.warmup=1", "train.checkpoint_every=1", "eval_images=1", "device=cpu",
         "prior.network.num_channels=32", "prior.network.channel_mult='1,2'"]


def test_the_checks_catch_partial_and_different_files(tmp_path):
    """The harness's own checks can fail: a truncated HDF5 or JSON is partial, a changed value or a
    missing file is a difference, timing fields and hidden temporaries are ignored."""
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["reconstruction"] = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    (tmp_path / "r.json").write_text(json.dumps({"slices": 1, "seconds": 0.5}))
    (tmp_path / ".r.json.1234.tmp").write_text("{")  # a hidden temporary may remain
    reference, problems = harness.snapshot(tmp_path)
    assert problems == [] and set(reference) == {"a.h5", "r.json"}

    (tmp_path / "r.json").write_text(json.dumps({"slices": 1, "seconds": 9.0}))  # timing only
    assert harness.differences(reference, harness.snapshot(tmp_path)[0]) == []
    with h5py.File(tmp_path / "a.h5", "r+") as f:
        f["reconstruction"][0, 0, 0] = 1.0
    assert harness.differences(reference, harness.snapshot(tmp_path)[0]) == ["a.h5"]
    data = (tmp_path / "a.h5").read_bytes()
    (tmp_path / "a.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "r.json").write_text('{"slices": ')
    _, problems = harness.snapshot(tmp_path)
    assert sorted(p.split(":")[0] for p in problems) == ["a.h5", "r.json"]
    (tmp_path / "a.h5").unlink()
    assert "a.h5" in harness.differences(reference, harness.snapshot(tmp_path)[0])


def test_numpy_seeding_repeats_and_restores_the_global_state():
    from recon.baselines.mri import numpy_seeded

    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    with numpy_seeded(3):
        first = np.random.normal(size=3)
    with numpy_seeded(3):
        second = np.random.normal(size=3)
    assert np.array_equal(first, second)
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.slow
@pytest.mark.parametrize(("target", "settings", "after_output"),
                         [("batch", BATCH, False), ("train", TRAIN, False), ("batch", BATCH, True)],
                         ids=["batch", "train", "batch-while-writing"])
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, target, settings, after_output):
    """Two kills on one output folder (the second lands on what the first left), then a rerun;
    ``after_output``: each kill counted from the run's next new output file."""
    result = harness.trials(target, 1, 0, tmp_path, settings=settings, files=2, slices=1, kills=2,
                            after_output=after_output, log=lambda _: None)
    assert result["trials"] == 1 and result["kills"] == 2
    assert result["failures"] == [] and result["partial"] == 0 and result["different"] == 0
