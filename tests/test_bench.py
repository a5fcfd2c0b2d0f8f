"""``python -m recon bench``: tables appended atomically, plots written, memory measured."""

import threading
import time

import pytest
import torch

from recon.app import main
from recon.bench import format_section
from recon.measure import PeakMemory

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_appends_a_table_per_task_and_plots(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n\nkept as they were\n")
    args = ["bench", "tasks=[inpainting]", "count=2", f"results={results}", f"plots={tmp_path / 'plots'}",
            "data.size=64", "samplers.dds.steps=4", "baselines.tv.iterations=50"]
    assert main(args) == 0
    text = results.read_text()
    assert text.startswith("# earlier results\n\nkept as they were\n")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| method | cases | PSNR [dB] | SSIM | SSIM (object) |")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table[2:]}
    assert set(rows) == {"tv", "dds-4"} and all(r[1] == "2" for r in rows.values())
    assert rows["dds-4"][6] == "4" and rows["dds-4"][8].startswith("cpu")
    assert (tmp_path / "plots" / "inpainting.png").stat().st_size > 0
    assert main(args) == 0  # a second run appends a second section
    assert results.read_text().count("### recon bench") == 2


def test_an_override_a_task_cannot_take_names_the_task_and_what_it_has(tmp_path, capsys, monkeypatch):
    """Every task's config is checked before any task runs (inpainting, first, would take minutes)."""
    import recon.bench

    ran = []
    monkeypatch.setattr(recon.bench, "bench_task", lambda task, *a: ran.append(task) or {})
    args = ["bench", "tasks=[inpainting,mri_multicoil]", "count=1", "samplers.dds.steps=4",
            f"results={tmp_path / 'R.md'}", f"plots={tmp_path / 'plots'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: task mri_multicoil: Could not override 'samplers.dds.steps'. "
                   "(samplers has no 'dds'; it has: diffpir)"], err
    assert not (tmp_path / "R.md").exists() and not (tmp_path / "plots").exists() and ran == []


def test_a_methods_draws_do_not_depend_on_the_methods_run_before_it():
    """Each method starts from the generator's state at entry (run, bench and batch alike): a
    random method gives the same image alone, after another random method, and in either order
    (before, one generator ran on through the list: held-out inpainting DiffPIR-100 gave 31.42 dB
    alone and 31.91 dB after DDS, from the random stream alone)."""
    from recon.engine import run_methods

    class Noisy:
        nfe = 1

        def __init__(self, scale):
            self.scale = scale

        def __call__(self, y, physics, generator=None):
            return y + self.scale * torch.randn(y.shape, generator=generator)

    y = torch.linspace(0.5, 1.5, 64).reshape(1, 1, 8, 8)

    def images(names):
        methods = {name: Noisy(1.0 if name == "a" else 2.0) for name in names}
        generator = torch.Generator().manual_seed(7)
        return {k: r.image for k, r in run_methods(methods, y, torch.nn.Identity(), y, generator).items()}

    alone, pair, swapped = images(["b"]), images(["a", "b"]), images(["b", "a"])
    assert torch.equal(alone["b"], pair["b"]) and torch.equal(pair["b"], swapped["b"])
    assert torch.equal(pair["a"], swapped["a"])
    assert torch.allclose(pair["b"] - y, 2 * (pair["a"] - y))  # both drew the same noise


def test_volume_tasks_get_a_z_psnr_column():
    row = {"psnr": 30.0, "ssim": 0.9, "z_psnr": 27.5, "seconds_per_slice": 1.0, "nfe": 20, "peak_mib": 5.0,
           "device": "cpu"}
    table = [line for line in format_section({"ct3d_sparse": {"dds_3d-20": [row, row]}}, "###").splitlines()
             if line.startswith("| ")]
    assert "| SSIM | z-PSNR [dB] | seconds/slice |" in table[0]
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert table[2].split(" | ")[4] == "27.50 ± 0.00"
    without = format_section({"sparse_ct": {"dds-20": [{k: v for k, v in row.items() if k != "z_psnr"}]}}, "###")
    assert "z-PSNR" not in without


def test_peak_memory_sees_a_large_allocation():
    """Even when the memory is already resident: freed earlier and kept by the allocator, as
    CPU runs do (``reuse_freed_memory``), so that the resident set does not grow. The block
    holds its 64 MiB until the sampling thread has provably read memory while it was held (two
    more readings than when it was allocated: the first may have begun before), so a busy
    machine that delays the thread makes the test slower, not wrong."""
    from recon.allocator import reuse_freed_memory

    reuse_freed_memory()
    warm = torch.ones(64 * 2**20 // 4)
    del warm
    with PeakMemory(torch.device("cpu")) as small:
        torch.zeros(10)
    with PeakMemory(torch.device("cpu")) as large:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x.add_(1)
        seen, deadline = large.samples, time.monotonic() + 60
        while large.samples < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert large.samples >= seen + 2, "the sampling thread took no reading in 60 s"
        del x
    assert 60 < large.peak_mib < 80 and small.peak_mib < 8


def test_peak_memory_keeps_the_largest_reading_above_the_entry_one():
    """The sampling logic with scripted readings (bytes): the peak is the largest reading minus
    the one at entry, including the reading taken at exit; no reading means no figure."""
    readings = iter([100 * 2**20, 103 * 2**20, 130 * 2**20, 101 * 2**20])
    done = threading.Event()

    def read():
        value = next(readings, None)
        if value is None:
            done.set()
            return 100 * 2**20
        return value

    with PeakMemory(torch.device("cpu"), read=read, period=0.001) as memory:
        assert done.wait(60)  # the thread has taken every scripted reading
    assert memory.peak_mib == 30 and memory.samples >= 4

    held = iter([10 * 2**20, 12 * 2**20])  # at entry, then at exit
    with PeakMemory(torch.device("cpu"), read=lambda: next(held), period=3600) as at_exit:
        pass
    assert at_exit.peak_mib == 2 and at_exit.samples == 1  # the long period: no thread reading yet

    with PeakMemory(torch.device("cpu"), read=lambda: None) as unmeasured:
        pass
    assert unmeasured.peak_mib is None


def test_gpu_figures_script_runs_small_on_cpu():
    """The GPU timing script's code path, on a small layout (the real run needs a GPU)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_figures.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--layout", "small", "--size", "32",
                           "--slices", "2", "--steps", "2", "--dps-steps", "2", "--precision", "fp32",
                           "--peak-tflops", "0.01"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 5 and rows[1].startswith("| DDS-2, 1 slice |")
    assert all(float(r.split(" | ")[3]) > 0 for r in rows[1:])  # a positive FLOP floor per row
