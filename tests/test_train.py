"""Training: the loss decreases, resume is exact, exports load as priors."""

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
           "-m", "recon", "train", *overrides, "train.batch_size=2", f"out={tmp_path / 'ddp'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = load_prior(tmp_path / "single" / "ct-phantom-128.safetensors")
    ddp = load_prior(tmp_path / "ddp" / "ct-phantom-128.safetensors")
    assert ddp.card["training"]["processes"] == 2 and ddp.card["training"]["steps"] == 3
    assert (tmp_path / "ddp" / "train_state.pt").is_file()
    for (name, a), b in zip(single.network.state_dict().items(), ddp.network.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
