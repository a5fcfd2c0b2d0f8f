"""Tiny simulated fastMRI multi-coil files for the batch tests (data_scripts/simulate_fastmri.py)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "simulate_fastmri.py"


def simulate(folder: Path, num_files: int = 2, slices: int = 3) -> list[Path]:
    """``num_files`` 48 x 48, 4-coil files of ``slices`` brain slices in ``folder``; their sorted paths."""
    spec = importlib.util.spec_from_file_location("simulate_fastmri", SCRIPT)
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    assert sim.main(["--out", str(folder), f"--num-files={num_files}", "--coils=4", f"--slices={slices}",
                     "--size=48", "--slices-from=60", "--slices-to=80", "--slice-step=3"]) == 0
    (folder / "manifest.json").unlink()
    return sorted(folder.glob("*.h5"))
