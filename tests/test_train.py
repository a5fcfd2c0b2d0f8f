"""Training: the loss decreases, resume is exact, exports load as priors, time budgets stop
all ranks at one step and the run resumes from there."""

import torch

from priors import load_prior
from priors.train import Trainer, TrainSettings, denoising_quality

CARD = {
    "name": "tiny",
    "network": {"image_size": 16, "in_channels": 1, "num_channels": 32, "num_res_blocks": 1,
                "channel_mult": "1,2", "attention_resolutions": "", "learn_sigma": False,
                "use_scale_shift_norm": True},
    "schedule": {"name": "linear", "steps": 1000},
    "normalization": {"offset": 0.5, "scale": 0.5, "units": "a.u."},
}


def images(n=6, size=24):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        r0, c0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        x[i, 0, r0 : r0 + size // 2, c0 : c0 + size // 2] = 1.0
    return x


def settings(steps):
    return TrainSettings(steps=steps, batch_size=4, crop=16, lr=1e-3, warmup=2, checkpoint_every=3, seed=7)


def test_resume_follows_the_uninterrupted_trajectory(tmp_path):
    torch.manual_seed(0)
    straight = Trainer(CARD, images(), tmp_path / "a", settings(6))
    straight.train()

    torch.manual_seed(0)
    first = Trainer(CARD, images(), tmp_path / "b", settings(6))
    first.train(until=3)  # "interrupted" after the step-3 checkpoint
    torch.manual_seed(123)  # a different process state: must not matter
    resumed = Trainer(CARD, images(), tmp_path / "b", settings(6))
    assert resumed.try_resume() and resumed.step == 3
    resumed.train()
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_training_reduces_the_loss_and_exports_a_loadable_prior(tmp_path):
    torch.manual_seed(0)
    losses = []
    trainer = Trainer(CARD, images(), tmp_path / "run", settings(40))
    trainer.train(progress=lambda step, loss: losses.append(loss))
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    quality = denoising_quality(trainer.ema_prior(), images(2), timesteps=(100,))
    trainer.export(tmp_path / "tiny.safetensors", quality)
    prior = load_prior(tmp_path / "tiny.safetensors")
    assert prior.card["training"]["steps"] == 40
    assert set(prior.card["quality"]["psnr_db"][100]) == {"noise_std_physical", "noisy", "tweedie"}
    z = torch.randn(1, 1, 16, 16)
    assert torch.allclose(prior.eps(z, 10), trainer.ema(z, torch.tensor([10.0])), atol=1e-6)


def test_trainer_leaves_the_callers_settings_alone(tmp_path):
    """The trainer records facts (warm start, processes) in its own copy of the settings."""
    import copy

    from recon.train_cmd import warm_start

    given = settings(2)
    before = copy.deepcopy(given)
    trainer = Trainer(CARD, images(), tmp_path / "run", given)
    trainer.train()
    trainer.export(tmp_path / "tiny.safetensors", {})
    warm_start(trainer, str(tmp_path / "tiny.safetensors"))  # records init= in trainer.settings.extra
    assert trainer.settings is not given and trainer.settings.extra == {"init": str(tmp_path / "tiny.safetensors")}
    assert given == before and given.extra == {}


def test_trainer_channels_follow_the_network_when_the_card_omits_them(tmp_path):
    """A card without in_channels builds guided-diffusion's 3-channel network; the trainer's prior
    and the exported one both have 3 channels (the trainer used to say 1 and cut eps to 1 channel)."""
    card = {**CARD, "network": {k: v for k, v in CARD["network"].items() if k != "in_channels"}}
    trainer = Trainer(card, torch.rand(4, 3, 16, 16), tmp_path / "run", settings(1))
    trainer.train()
    z = torch.randn(1, 3, 16, 16)
    assert trainer.network.in_channels == trainer.ema_prior().channels == 3
    trainer.export(tmp_path / "rgb.safetensors", {})
    loaded = load_prior(tmp_path / "rgb.safetensors")
    assert loaded.channels == 3
    assert torch.allclose(loaded.eps(z, 10), trainer.ema_prior().eps(z, 10), atol=1e-6)
    assert trainer.ema_prior().eps(z, 10).shape == (1, 3, 16, 16)


def test_save_state_is_atomic_and_leaves_no_temporary(tmp_path):
    trainer = Trainer(CARD, images(), tmp_path / "run", settings(3))
    trainer.train()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["train_state.pt"]
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["step"] == 3
    for a, b in zip(state["ema"].values(), trainer.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_train_command_warm_starts_from_a_checkpoint(tmp_path, capsys):
    from recon.app import main

    overrides = ["prior.data.count=4", "prior.data.size=32", "train.steps=2", "train.batch_size=2",
                 "train.crop=32", "eval_images=1", "device=cpu"]
    assert main(["train", *overrides, f"out={tmp_path / 'a'}"]) == 0
    first = tmp_path / "a" / "ct-phantom-128.safetensors"
    assert main(["train", *overrides, "train.steps=1", f"out={tmp_path / 'b'}", f"init={first}"]) == 0
    assert "warm start" in capsys.readouterr().out
    card = load_prior(tmp_path / "b" / "ct-phantom-128.safetensors").card
    assert card["training"]["init"] == str(first)
    bundled = load_prior("ct-phantom-128").card  # the config names this card: the same prior is trained
    assert [card[k] for k in ("name", "network", "schedule", "normalization")] == [
        bundled[k] for k in ("name", "network", "schedule", "normalization")]
    assert main(["train", *overrides, f"out={tmp_path / 'c'}", "init=no-such-prior"]) == 2


def test_ddp_two_processes_follow_the_single_process_trajectory(tmp_path):
    """torchrun with 2 CPU processes (gloo), batch 2 each == one process with batch 4."""
    import os
    import subprocess
    import sys

    from recon.app import main

    overrides = ["prior.data.count=4", "prior.data.size=32", "train.steps=3", "train.crop=32", "train.warmup=1",
                 "prior.network.channel_mult='1,2'", "eval_images=1", "device=cpu"]
    assert main(["train", *overrides, "train.batch_size=4", f"out={tmp_path / 'single'}"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "recon", "train", *overrides, "train.batch_size=2", "train.minutes=600", f"out={tmp_path / 'ddp'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = load_prior(tmp_path / "single" / "ct-phantom-128.safetensors")
    ddp = load_prior(tmp_path / "ddp" / "ct-phantom-128.safetensors")
    assert ddp.card["training"]["processes"] == 2 and ddp.card["training"]["steps"] == 3
    assert ddp.card["training"]["time_budget_min"] == 600 and "stopped_by" not in ddp.card["training"]
    assert (tmp_path / "ddp" / "train_state.pt").is_file()
    for (name, a), b in zip(single.network.state_dict().items(), ddp.network.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_time_budget_stops_early_checkpoints_records_and_resumes(tmp_path):
    """A 0.12 s budget stops far before train.steps; the state at the step reached resumes
    onto the uninterrupted trajectory; the card records the steps trained and the budget."""
    budgeted = TrainSettings(**{**vars(settings(10_000)), "minutes": 0.002})
    trainer = Trainer(CARD, images(), tmp_path / "run", budgeted)
    trainer.train()
    reached = trainer.step
    assert trainer.stopped_by_budget and 1 <= reached < 10_000
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == reached
    trainer.export(tmp_path / "tiny.safetensors", {})
    facts = load_prior(tmp_path / "tiny.safetensors").card["training"]
    assert facts["steps"] == reached and facts["steps_planned"] == 10_000
    assert facts["stopped_by"] == "time budget" and facts["time_budget_min"] == 0.002

    resumed = Trainer(CARD, images(), tmp_path / "run", settings(reached + 2))
    assert resumed.try_resume() and resumed.step == reached
    resumed.train()
    assert resumed.step == reached + 2 and not resumed.stopped_by_budget
    straight = Trainer(CARD, images(), tmp_path / "straight", settings(reached + 2))
    straight.train()
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_train_command_with_budget_shards_and_float16_resumes(tmp_path, capsys):
    """CLI: train.minutes stops early and says so; train.shard_mib writes shards only
    (plus the card) that load as the export path; a rerun with the same out resumes."""
    from recon.app import main

    overrides = ["prior.data.count=4", "prior.data.size=32", "train.batch_size=2", "train.crop=32",
                 "eval_images=1", "device=cpu", f"out={tmp_path}", "train.shard_mib=4", "train.export_dtype=float16"]
    assert main(["train", *overrides, "train.steps=100000", "train.minutes=0.002"]) == 0
    out = capsys.readouterr().out
    assert "time budget of 0.002 min reached" in out
    shards = sorted(tmp_path.glob("ct-phantom-128-*-of-*.safetensors"))
    assert len(shards) == 3 and all(p.stat().st_size <= 4 * 2**20 for p in shards)  # 4.4M params in fp16
    assert not (tmp_path / "ct-phantom-128.safetensors").exists()
    facts = load_prior(tmp_path / "ct-phantom-128.safetensors").card["training"]
    assert facts["stopped_by"] == "time budget" and facts["export_dtype"] == "float16"
    reached = facts["steps"]
    assert main(["train", *overrides, f"train.steps={reached + 1}"]) == 0
    assert f"resuming {tmp_path} at step {reached}" in capsys.readouterr().out
    facts = load_prior(shards[1]).card["training"]
    assert facts["steps"] == reached + 1 and "stopped_by" not in facts
    assert main(["train", *overrides, "train.minutes=0"]) == 2


DDP_BUDGET_SCRIPT = """
import datetime, json, sys
import torch, torch.distributed as dist
from priors.train import Trainer, TrainSettings
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # a mismatch fails, not hangs
rank = dist.get_rank()
card, out = json.loads(sys.argv[1]), sys.argv[2]
images = torch.rand(6, 1, 24, 24)
steps = []
# phase 1: rank 0's tiny budget stops rank 1 too (its own budget is huge);
# phase 2: rank 1's tiny budget is overruled by rank 0's huge one.
for minutes, until in (([0.002, 1e6][rank], 10_000), ([1e6, 1e-9][rank], None)):
    settings = TrainSettings(steps=until or steps[-1][0] + 2, batch_size=2, crop=16, warmup=2,
                             checkpoint_every=1000, seed=7, minutes=minutes)
    trainer = Trainer(card, images, out, settings)
    assert settings.extra == {} and trainer.settings.extra == {"processes": 2}  # recorded in its own copy
    trainer.try_resume()
    trainer.train()
    steps.append((trainer.step, trainer.stopped_by_budget))
    dist.barrier()  # rank 0 has written the state that phase 2 resumes from
with open(f"{out}/rank{rank}.json", "w") as f:  # not stdout: the ranks' prints can interleave mid-line
    json.dump(steps, f)
dist.destroy_process_group()
"""


def test_ddp_ranks_stop_at_the_same_step_on_rank_0s_time_budget(tmp_path):
    """torchrun, 2 CPU processes (gloo): rank 0's clock decides the stop for both ranks."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "budget.py"
    script.write_text(DDP_BUDGET_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           json.dumps(CARD), str(tmp_path / "run")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {f"RANK{r}": json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert ranks["RANK0"] == ranks["RANK1"]
    (first, stopped_first), (second, stopped_second) = ranks["RANK0"]
    assert stopped_first and 1 <= first < 10_000
    assert second == first + 2 and not stopped_second


def test_training_card_overrides_replace_the_cards_values(tmp_path):
    """prior.network/schedule/normalization keys replace the card's one by one (its key order
    kept); a renamed prior keeps its config's card; a config without a card gives the network."""
    import pytest
    import yaml
    from omegaconf import OmegaConf

    from priors.registry import WEIGHTS_DIR
    from priors.unet import GUIDED_DIFFUSION_DEFAULTS
    from recon.config import load_config
    from recon.errors import ConfigError
    from recon.train_cmd import training_card

    bundled = yaml.safe_load((WEIGHTS_DIR / "ct-phantom-128.yaml").read_text())
    cfg = load_config(["prior.name=ct-wide", "prior.network.num_channels=64", "prior.normalization.scale=0.5",
                       "prior.schedule.name=cosine", "+prior.network.extra=1"], config_name="train")
    assert set(cfg.prior.network) == {*GUIDED_DIFFUSION_DEFAULTS, "extra"}  # train.yaml lists every argument
    card = training_card(cfg.prior)
    assert card["name"] == "ct-wide" and str(cfg.export).endswith("ct-wide/ct-wide.safetensors")
    assert card["network"] == {**bundled["network"], "num_channels": 64, "extra": 1}
    assert list(card["network"]) == [*bundled["network"], "extra"]
    assert card["normalization"] == {**bundled["normalization"], "scale": 0.5}
    assert card["schedule"] == {"name": "cosine", "steps": 1000}

    own = {"name": "mine", "network": {**CARD["network"], "dropout": None}, "data": {"source": "npy"}}
    card = training_card(OmegaConf.create(own))  # no card named mine: the config's network alone
    assert card["network"] == CARD["network"] and card["schedule"] == {} and card["data"]["split"] == "train"
    with pytest.raises(ConfigError, match="prior.train_card"):
        training_card(OmegaConf.create({"name": "mine", "data": {"source": "npy"}}))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(CARD))
    card = training_card(OmegaConf.create({"name": "mine", "train_card": str(path), "data": {"source": "npy"}}))
    assert [card[k] for k in ("network", "schedule", "normalization")] == [
        CARD[k] for k in ("network", "schedule", "normalization")]
    with pytest.raises(ConfigError, match="prior.train_card: .*model card not found"):
        training_card(OmegaConf.create({"name": "mine", "train_card": str(tmp_path / "no.yaml"), "data": {}}))
