"""Resources in ``python -m recon batch``: memory estimate (chunk or refuse), a full disk mid-batch."""

import errno
import hashlib
import json
import os

import h5py
import numpy as np
import pytest
from fastmri_files import simulate

from recon.app import main
from recon.batch import memory_limit, memory_need
from recon.io.fastmri import read_fastmri

pytest.importorskip("sigpy")

ONE = ["mask.center_fraction=0.2", "operator.kernel_width=4", "device=cpu", "batch_size=2",
       "~baselines.l1_wavelet", "~baselines.cg_sense", "samplers=[]"]  # zero-filled only: one HDF5 and one record per file


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("res") / "in"
    return folder, simulate(folder)


def run_batch(root, output, *extra):
    return main(["batch", f"data.root={root}", f"output={output}", *ONE, *extra])


def digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_memory_limit_parsing():
    assert memory_limit("512MB") == 512 * 2**20 and memory_limit("1.5GiB") == int(1.5 * 2**30)
    assert memory_limit(4096) == 4096 and memory_limit(None) is None and memory_limit("none") is None
    assert memory_limit("auto") is None or memory_limit("auto") > 0


@pytest.mark.parametrize("spec", ["lots", "-1GiB", "3 parsecs"])
def test_bad_memory_limit_is_one_line(inputs, tmp_path, capsys, spec):
    root, _ = inputs
    assert run_batch(root, tmp_path / "o", f"++memory_limit={spec}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: memory_limit={spec}:"), err
    assert not (tmp_path / "o").exists()


def test_batch_too_big_is_chunked_and_one_slice_too_big_refused(inputs, tmp_path, capsys):
    root, files = inputs
    volume = read_fastmri(files[0])
    per_slice, kept = memory_need(volume.kspace_shape, tuple(volume.crop_size), 1)
    assert per_slice == 12 * 4 * volume.kspace_shape[2] * volume.kspace_shape[3] * 8 and kept == 2 * 3 * 48 * 48 * 4
    # room for one slice, not two: every file runs one slice at a time, with the same images
    assert run_batch(root, tmp_path / "chunked", f"++memory_limit={per_slice + kept + per_slice // 2}") == 0
    err = capsys.readouterr().err
    assert err.count("using batch_size=1") == 2 and "batch_size=2 would need about" in err
    assert run_batch(root, tmp_path / "whole", "++memory_limit=none") == 0
    for path in files:
        with h5py.File(tmp_path / "chunked" / "zero_filled" / path.name) as a, \
                h5py.File(tmp_path / "whole" / "zero_filled" / path.name) as b:
            assert np.allclose(a["reconstruction"][()], b["reconstruction"][()], rtol=1e-5, atol=1e-7)
    # not even one slice fits: each file fails, naming the size it would need; nothing written for it
    capsys.readouterr()
    assert run_batch(root, tmp_path / "refused", f"++memory_limit={per_slice // 2}") == 1
    need = f"{(per_slice + kept) / 2**20:.1f} MiB"
    failed = json.loads((tmp_path / "refused" / "summary.json").read_text())["failed"]
    assert set(failed) == {p.name for p in files}
    assert all(f"needs about {need}" in reason and "memory_limit" in reason for reason in failed.values()), failed
    assert not (tmp_path / "refused" / "zero_filled").exists()


def errors(capsys):
    """The ``error:`` lines on stderr (progress bars aside)."""
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line]


def fail_fsync_after(monkeypatch, allowed):
    """``os.fsync`` (the atomic writer's last step before the rename) succeeds ``allowed`` times,
    then fails as on a full disk."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > allowed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_keeps_earlier_outputs_and_says_so(inputs, tmp_path, capsys, monkeypatch):
    root, files = inputs
    out = tmp_path / "out"
    first, second = files
    # the disk fills after the first file's HDF5 and record: the batch stops with one line
    fail_fsync_after(monkeypatch, 2)
    assert run_batch(root, out) == 2
    err = errors(capsys)
    assert len(err) == 1 and "no space left" in err[0] and second.name in err[0] and str(out) in err[0], err
    assert sorted(digests(out)) == ["per_volume/zero_filled/" + first.stem + ".json", "zero_filled/" + first.name]
    with h5py.File(out / "zero_filled" / first.name) as f:
        assert f["reconstruction"].shape == (3, 48, 48)
    # space again: the rerun finishes only the second file
    monkeypatch.undo()
    assert run_batch(root, out) == 0
    done = digests(out)
    assert len(done) == 6  # 2 HDF5, 2 records, summary.json and .csv
    # full again while rewriting the second file's outputs: the previous complete ones are kept
    (out / "per_volume" / "zero_filled" / f"{second.stem}.json").unlink()
    fail_fsync_after(monkeypatch, 0)
    capsys.readouterr()
    assert run_batch(root, out) == 2
    err = errors(capsys)
    assert len(err) == 1 and "no space left" in err[0] and second.name in err[0], err
    expected = {k: v for k, v in done.items() if k != f"per_volume/zero_filled/{second.stem}.json"}
    assert digests(out) == expected  # no partial or temporary file, earlier outputs byte-identical


def test_ray_executor_refuses_what_does_not_fit_before_submitting(inputs, tmp_path):
    """The memory fit runs in the driver for executor=ray too: a file that would not fit fails
    with the size it needs, and nothing is written for it."""
    pytest.importorskip("ray")
    root, files = inputs
    volume = read_fastmri(files[0])
    per_slice, _ = memory_need(volume.kspace_shape, tuple(volume.crop_size), 1)
    out = tmp_path / "ray"
    assert run_batch(root, out, "executor=ray", "ray.num_cpus=1", f"++memory_limit={per_slice // 2}") == 1
    failed = json.loads((out / "summary.json").read_text())["failed"]
    assert set(failed) == {p.name for p in files} and all("needs about" in r for r in failed.values()), failed
    assert not (out / "zero_filled").exists()


def test_ray_worker_reports_a_full_disk_and_the_driver_stops_with_one_line(inputs, tmp_path, monkeypatch):
    """A worker whose write hits ENOSPC answers NO_SPACE instead of crashing (the driver then
    cancels the rest and raises ``no_space``, the local executor's one-line error, checked here)."""
    from omegaconf import OmegaConf

    from recon import batch_job, distributed
    from recon.config import job_config, load_config

    root, files = inputs

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(batch_job, "process_file", full)
    config = OmegaConf.to_container(job_config(load_config([f"data.root={root}", f"output={tmp_path}", *ONE],
                                                           config_name="batch")), resolve=True)
    assert distributed._reconstruct_file(str(files[0]), ["zero_filled"], config, str(tmp_path)) == distributed.NO_SPACE
    error = batch_job.no_space(tmp_path, files[0].name)
    assert "no space left" in str(error) and files[0].name in str(error) and "\n" not in str(error)
