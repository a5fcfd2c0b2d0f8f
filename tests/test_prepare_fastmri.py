"""data_scripts/prepare_fastmri.py on simulated fastMRI files: maps, combined images, splits."""

import importlib.util
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("nilearn")
pytest.importorskip("sigpy")

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


def load(name):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("fastmri")
    sim = load("simulate_fastmri")
    assert sim.main(["--out", str(root), "--num-files", "4", "--coils", "4", "--slices", "5", "--size", "48",
                     "--slices-from", "60", "--slices-to", "100", "--noise", "0.001"]) == 0
    (root / "manifest.json").unlink()
    (root / "broken.h5").write_bytes(b"not an hdf5 file")
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    out = tmp_path_factory.mktemp("prepared")
    code = load("prepare_fastmri").main(["--root", str(root), "--out", str(out), "--val-fraction", "0.25",
                                         "--test-fraction", "0.25", "--edge-fraction", "0.2"])
    return root, out, code, before


def test_maps_and_combined_image_match_the_rss(prepared):
    root, out, code, _ = prepared
    with h5py.File(out / "maps" / "sim_brain_s0_0000.h5", "r") as f:
        maps, image = f["sens_maps"][()], f["image"][()]
    with h5py.File(root / "sim_brain_s0_0000.h5", "r") as f:
        target = f["reconstruction_rss"][()]
    assert maps.shape == (5, 4, 48, 48) and image.shape == (5, 1, 48, 48) and image.dtype == np.complex64
    inside = target > 0.2 * target.max()
    err = np.abs(np.abs(image[:, 0]) - target)[inside] / target[inside]
    assert np.median(err) < 0.02, np.median(err)
    coverage = (np.abs(maps) ** 2).sum(axis=1)[inside]
    assert np.allclose(coverage, 1.0, atol=0.05)


def test_splits_training_stack_and_failures(prepared):
    root, out, code, before = prepared
    assert code == 1  # broken.h5 failed, the others went on
    splits = json.loads((out / "splits.json").read_text())
    assert "broken.h5" in splits["failed"]
    names = splits["train"] + splits["val"] + splits["test"]
    assert sorted(names) == sorted(f"sim_brain_s0_{i:04d}.h5" for i in range(4))
    assert len(splits["train"]) == 2 and len(splits["val"]) == 1 and len(splits["test"]) == 1
    stack = np.load(out / "train_images.npy")
    assert stack.shape == (2 * 3, 1, 48, 48) and stack.dtype == np.complex64  # 5 slices minus 1 at each end
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before  # inputs untouched


def test_rerun_keeps_existing_outputs_and_same_seed_same_split(prepared):
    root, out, _, _ = prepared
    maps = out / "maps" / "sim_brain_s0_0001.h5"
    stamp = maps.stat().st_mtime_ns
    first = json.loads((out / "splits.json").read_text())
    assert load("prepare_fastmri").main(["--root", str(root), "--out", str(out), "--val-fraction", "0.25",
                                         "--test-fraction", "0.25"]) == 1
    assert maps.stat().st_mtime_ns == stamp
    again = json.loads((out / "splits.json").read_text())
    assert {k: again[k] for k in ("train", "val", "test")} == {k: first[k] for k in ("train", "val", "test")}
