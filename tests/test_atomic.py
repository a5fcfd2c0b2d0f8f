"""The one atomic writer (priors.atomic, re-exported by recon.io.atomic): no process-wide side
effect (the umask is never set), plain-open() permissions for every writer built on it, and an
error keeps the previous file."""

import json
import subprocess
import sys

import pytest

from priors import atomic as priors_atomic
from recon.io import atomic as recon_atomic

# Runs in a fresh interpreter so that the imports happen under the watch: os.umask is wrapped
# before recon/priors are imported, a non-default umask is set so that a fixed mode (0o644)
# would differ from what open() gives, and every writer writes one file.
UMASK_SCRIPT = r"""
import json, os, sys
from pathlib import Path
os.umask(0o027)
calls = []
real_umask = os.umask
os.umask = lambda mask: calls.append(mask) or real_umask(mask)

import torch
import recon.io.atomic as recon_atomic
from priors.atomic import write_atomic
from priors.checkpoint import save_checkpoint
from priors.shards import save_sharded
from priors.train import Trainer, TrainSettings

out = Path(sys.argv[1])
card = json.loads(sys.argv[2])
with open(out / "plain.txt", "w") as handle:
    handle.write("plain")
recon_atomic.save_json(out / "a.json", {"x": 1})
recon_atomic.save_npy(out / "a.npy", torch.zeros(3).numpy())
with recon_atomic.atomic_write(out / "a.txt", "w") as handle:
    handle.write("text")
write_atomic(out / "a.bin", b"bytes")
trainer = Trainer(card, torch.rand(2, 1, 16, 16), out / "run", TrainSettings(steps=1, batch_size=1, crop=16))
trainer.save_state()
save_checkpoint(out / "ckpt.safetensors", trainer.ema, card)
save_sharded(out / "sharded.safetensors", trainer.ema, card, max_mib=4)
os.umask = real_umask
now = real_umask(0o027)
modes = {p.name: p.stat().st_mode & 0o777 for p in sorted(out.rglob("*")) if p.is_file()}
print(json.dumps({"calls": calls, "umask_after": now, "modes": modes}))
"""

CARD = {
    "name": "tiny",
    "network": {"image_size": 16, "in_channels": 1, "num_channels": 32, "num_res_blocks": 1,
                "channel_mult": "1,2", "attention_resolutions": "", "learn_sigma": False},
    "schedule": {"name": "linear", "steps": 1000},
    "normalization": {"offset": 0.5, "scale": 0.5, "units": "a.u."},
}


def test_no_umask_side_effect_and_plain_open_permissions(tmp_path):
    done = subprocess.run([sys.executable, "-c", UMASK_SCRIPT, str(tmp_path), json.dumps(CARD)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["calls"] == []  # importing and writing never touched the umask
    assert report["umask_after"] == 0o027
    modes = report["modes"]
    assert modes.pop("plain.txt") == 0o640  # what open() gives under umask 027
    assert set(modes) >= {"a.json", "a.npy", "a.txt", "a.bin", "train_state.pt", "ckpt.safetensors", "ckpt.yaml",
                          "sharded-00001-of-00001.safetensors", "sharded.yaml"}
    assert {name: oct(mode) for name, mode in modes.items()} == {name: oct(0o640) for name in modes}


def test_recon_reexports_the_one_writer():
    assert recon_atomic.atomic_write is priors_atomic.atomic_write
    assert recon_atomic.write_atomic is priors_atomic.write_atomic


def test_write_atomic_bytes_and_utf8_text(tmp_path):
    priors_atomic.write_atomic(tmp_path / "sub" / "t.yaml", "µ: 1/cm\n")
    assert (tmp_path / "sub" / "t.yaml").read_bytes() == "µ: 1/cm\n".encode("utf-8")
    priors_atomic.write_atomic(tmp_path / "sub" / "t.yaml", b"\x00\x01")
    assert (tmp_path / "sub" / "t.yaml").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["t.yaml"]  # no temporary left


def test_error_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "state.bin"
    priors_atomic.write_atomic(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with priors_atomic.atomic_write(target, "wb") as handle:
            handle.write(b"new, half written")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        with priors_atomic.atomic_write(target, "ab"):
            pass
