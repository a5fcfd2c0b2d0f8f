"""One batch per output folder: a second refuses at once with one line; a killed holder frees it."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from recon.app import main
from recon.errors import ReconError
from recon.io.lock import LOCK_NAME, FolderBusy, output_lock

pytest.importorskip("fcntl")

HOLD = textwrap.dedent("""
    import sys, time
    from recon.io.lock import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """A subprocess holding ``tmp_path/out``'s lock; killed at the end."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield out, proc
    finally:
        proc.kill()
        proc.wait()


def test_second_batch_refuses_at_once_and_writes_nothing(holder, tmp_path, capsys):
    out, proc = holder
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.h5").write_bytes(b"")  # never read: the batch refuses before
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = main(["batch", f"data.root={root}", f"output={out}", "device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"error: output={out}: another recon batch (pid {proc.pid}) is writing here; "
                      "wait for it or choose another output")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before == {LOCK_NAME: str(proc.pid).encode()}


def test_killed_holder_leaves_no_stale_lock(holder):
    out, proc = holder
    with pytest.raises(FolderBusy, match=f"pid {proc.pid}"), output_lock(out):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / LOCK_NAME).exists()  # left behind by the killed process, but not locked
    with output_lock(out) as path:
        assert path.read_text() == str(os.getpid())
    assert not (out / LOCK_NAME).exists()  # a clean release removes it


def test_lock_is_exclusive_within_a_process_and_reusable_after_release(tmp_path):
    with output_lock(tmp_path / "o"):  # noqa: SIM117 (the outer one holds it)
        with pytest.raises(ReconError, match="another recon batch"), output_lock(tmp_path / "o"):
            pass
    with output_lock(tmp_path / "o"):
        pass
    assert list((tmp_path / "o").iterdir()) == []


def test_an_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(FolderBusy, match=r"output=.*a_file/out: cannot write here"):
        with output_lock(blocker / "out"):
            pass
    assert blocker.read_text() == "not a folder"
