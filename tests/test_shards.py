"""Sharded exports: bit-identical to one file, complete without the YAML beside them, and
every broken set (missing, extra, foreign, corrupt or renamed shard; oversized tensor) is one
clear error naming the file or tensor."""

import shutil

import pytest
import torch

from priors import CheckpointError, load_prior
from priors.shards import load_sharded, shard_set
from priors.train import Trainer, TrainSettings

from test_train import CARD, images

MIB = 2**20


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A tiny network (2.7 MiB in float32, largest tensor 0.28 MiB) after two steps."""
    run = Trainer(CARD, images(), tmp_path_factory.mktemp("run"),
                  TrainSettings(steps=2, batch_size=2, crop=16, warmup=1, checkpoint_every=100, seed=3))
    run.train()
    return run


def export(trainer, path, **settings):
    """``trainer.export`` with some settings changed for this export only."""
    saved = {k: getattr(trainer.settings, k) for k in settings}
    for k, v in settings.items():
        setattr(trainer.settings, k, v)
    try:
        return trainer.export(path, {"images": 0})
    finally:
        for k, v in saved.items():
            setattr(trainer.settings, k, v)


def test_sharded_export_round_trips_bit_identically_from_any_name(trainer, tmp_path):
    single = load_prior(export(trainer, tmp_path / "one" / "tiny.safetensors")[0])
    shards = export(trainer, tmp_path / "many" / "tiny.safetensors", shard_mib=1)
    assert len(shards) >= 3 and [p.name for p in shards][:2] == [
        f"tiny-00001-of-{len(shards):05d}.safetensors", f"tiny-00002-of-{len(shards):05d}.safetensors"]
    assert all(p.stat().st_size <= MIB for p in shards)
    assert (tmp_path / "many" / "tiny.yaml").is_file() and not (tmp_path / "many" / "tiny.safetensors").exists()
    reference = single.network.state_dict()
    for name in (shards[0], shards[-1], tmp_path / "many" / "tiny", tmp_path / "many" / "tiny.safetensors"):
        prior = load_prior(name)
        state = prior.network.state_dict()
        assert list(state) == list(reference)
        assert all(torch.equal(state[k], reference[k]) for k in reference), name
        assert prior.card == single.card


def test_shards_alone_carry_the_card(trainer, tmp_path):
    shards = export(trainer, tmp_path / "a" / "tiny.safetensors", shard_mib=1)
    moved = tmp_path / "b"
    moved.mkdir()
    for p in shards:
        shutil.copy(p, moved / p.name)
    prior = load_prior(moved / shards[0].name)
    assert prior.card["training"]["steps"] == 2 and prior.card["network"] == CARD["network"]


def test_missing_extra_and_foreign_shards_are_named(trainer, tmp_path):
    shards = export(trainer, tmp_path / "tiny.safetensors", shard_mib=1)
    count = len(shards)
    second = shards[1].read_bytes()
    shards[1].unlink()
    missing = rf"tiny-00002-of-{count:05d}\.safetensors: shard missing \(shard 2 of {count}"
    with pytest.raises(CheckpointError, match=missing):
        load_prior(shards[0])
    with pytest.raises(CheckpointError, match="shard missing"):
        load_prior(tmp_path / "tiny")

    shards[1].write_bytes(second)
    extra = tmp_path / f"tiny-00001-of-{count + 1:05d}.safetensors"
    shutil.copy(shards[0], extra)
    with pytest.raises(CheckpointError, match=rf"{extra.name}: extra shard, not part of the {count}-shard set"):
        load_prior(shards[-1])
    extra.unlink()

    other = Trainer(CARD, images(), tmp_path / "other", TrainSettings(steps=1, batch_size=2, crop=16, seed=4))
    other.train()
    foreign = export(other, tmp_path / "other" / "tiny.safetensors", shard_mib=1)
    assert len(foreign) == count
    shutil.copy(foreign[-1], shards[-1])
    with pytest.raises(CheckpointError, match=rf"{shards[-1].name}: shard of a different export"):
        load_prior(shards[0])

    corrupt = export(trainer, tmp_path / "c" / "tiny.safetensors", shard_mib=1)
    data = bytearray(corrupt[1].read_bytes())
    data[-3] ^= 0x40  # one bit of the last tensor's data
    corrupt[1].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{corrupt[1].name}: contents do not match the shard's sha256"):
        load_prior(corrupt[0])

    renamed = export(trainer, tmp_path / "r" / "tiny.safetensors", shard_mib=1)
    renamed[0].rename(renamed[0].with_name("swap"))
    renamed[1].rename(renamed[0])
    renamed[0].with_name("swap").rename(renamed[1])
    with pytest.raises(CheckpointError, match="metadata says shard 2 of"):
        load_prior(renamed[0])


def test_reexport_removes_stale_shards_and_a_tensor_over_the_limit_is_named(trainer, tmp_path):
    many = export(trainer, tmp_path / "tiny.safetensors", shard_mib=1)
    few = export(trainer, tmp_path / "tiny.safetensors", shard_mib=2)
    assert len(few) < len(many) and shard_set(tmp_path / "tiny") == few
    assert sorted(tmp_path.glob("tiny-*.safetensors")) == few
    too_big = r"tensor '.+' \(0\.\d+ MiB with its header entry\) does not fit a shard of 0\.1 MiB"
    with pytest.raises(CheckpointError, match=too_big):
        export(trainer, tmp_path / "small" / "tiny.safetensors", shard_mib=0.1)


def test_half_precision_exports_load_as_float32_within_tolerance(trainer, tmp_path):
    reference = trainer.ema.state_dict()
    for dtype, rtol in (("float16", 1e-3), ("bfloat16", 8e-3)):
        shards = export(trainer, tmp_path / dtype / "tiny.safetensors", shard_mib=1, export_dtype=dtype)
        single = export(trainer, tmp_path / dtype / "one.safetensors", export_dtype=dtype)
        assert sum(p.stat().st_size for p in shards) < 0.6 * 2.69 * MIB
        for prior in (load_sharded(shards[0]), load_prior(single[0])):
            assert prior.card["training"]["export_dtype"] == dtype
            for name, value in prior.network.state_dict().items():
                assert value.dtype == torch.float32
                assert torch.allclose(value, reference[name].float(), rtol=rtol, atol=1e-6), name


def test_exports_replace_weights_of_the_other_form(trainer, tmp_path):
    path = tmp_path / "tiny.safetensors"
    export(trainer, path)
    shards = export(trainer, path, shard_mib=1)
    assert not path.exists() and load_prior(tmp_path / "tiny").card["training"]["export_dtype"] == "float32"
    export(trainer, path, export_dtype="float16")
    assert path.is_file() and not any(p.exists() for p in shards)
    assert load_prior(path).card["training"]["export_dtype"] == "float16"
