"""The stages of ``benchmarks/device_run.py`` that train: ``train_ddp`` (``torchrun`` on NCCL, 40
steps: steps/s) and ``train_priors`` (explicit only: a CT and an MRI prior with 4x the bundled
width, trained for ``--train-minutes`` each and delivered as float16 shards into the output
folder, within the 8 files a device call returns)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .stage import REPO, Context, Step, merge, printed_json, step_record

TRAIN_WIDTH = 64          # train_priors: num_channels (the bundled priors have 32): ~17.8M parameters
SHARD_MIB = 15            # train_priors: shard size (a device call returns files of <= 16 MiB)
OUT_FILE_LIMIT = 8        # files a device call returns


def build_train_ddp(ctx: Context) -> list[Step]:
    overrides = ["prior=ct_phantom", f"device={ctx.device}", "train.steps=40", "train.checkpoint_every=20",
                 "eval_images=2", "prior.data.count=256"]
    if ctx.smoke:
        overrides = merge(overrides, ["train.steps=2", "train.checkpoint_every=1", "prior.data.count=4",
                                      "prior.data.size=32", "train.crop=32", "train.batch_size=2"])
    return [Step("torchrun", [ctx.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                              "-m", "recon", "train", *overrides, f"out={ctx.dir('train_ddp')}"],
                 env={"OMP_NUM_THREADS": "1" if ctx.smoke else "8"})]


def _card(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RuntimeError(f"no model card {path.name}")
    return _yaml(path.read_text())


def collect_train_ddp(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    card = _card(ctx.dir("train_ddp") / "ct-phantom-128.yaml")
    training = card.get("training", {})
    steps, wall = training.get("steps"), training.get("wall_time_s")
    return {"steps": steps, "train_loop_s": wall, "steps_per_s": steps / wall if steps and wall else None,
            "process_s": step_record(rec, "torchrun")["seconds"], "device": training.get("device"),
            "backend": "gloo" if ctx.smoke else "nccl", "quality_psnr_db": card.get("quality", {}).get("psnr_db")}


def _train_overrides(ctx: Context, prior: str, name: str) -> list[str]:
    width = 32 if ctx.smoke else TRAIN_WIDTH
    overrides = [f"prior={prior}", f"prior.name={name}", f"device={ctx.device}",
                 f"prior.network.num_channels={width}", "train.steps=1000000", "train.checkpoint_every=1000",
                 f"train.minutes={ctx.train_minutes}", f"train.shard_mib={4 if ctx.smoke else SHARD_MIB}",
                 "train.export_dtype=float16", f"train.batch_size={2 if ctx.smoke else 32}",
                 f"out={ctx.dir('train_priors') / name}", f"export={ctx.dir('train_priors') / 'export' / name}.safetensors"]
    if ctx.smoke:
        overrides = merge(overrides, ["train.steps=3", "train.crop=32", "eval_images=2"])
    return overrides


def build_train_priors(ctx: Context) -> list[Step]:
    data = ctx.dir("train_priors") / "data"
    data.mkdir(parents=True, exist_ok=True)
    make = [ctx.python, str(REPO / "data_scripts" / "make_mri_training_set.py")]
    size = ["--size", "64", "--copies", "1"] if ctx.smoke else []
    ct = _train_overrides(ctx, "ct_phantom", "ct-phantom-gpu") + ["prior.data.count=" + ("4" if ctx.smoke else "1000")]
    if ctx.smoke:
        ct.append("prior.data.size=32")
    mri = _train_overrides(ctx, "mri_brain", "mri-brain-gpu") + [f"prior.data.path={data / 'mri_train.npy'}",
                                                                   f"prior.data.eval_path={data / 'mri_heldout.npy'}"]
    budget_s = ctx.train_minutes * 60 + (60 if ctx.smoke else 180)  # training + data, start-up, eval, export
    return [
        Step("train ct", ctx.recon("train", *ct), timeout_s=budget_s, required=False),
        Step("mri data", [*make, "--out", str(data / "mri_train.npy"), *size], timeout_s=180, required=False),
        Step("mri held-out", [*make, "--held-out", "--out", str(data / "mri_heldout.npy"), *size], timeout_s=60,
             required=False),
        Step("train mri", ctx.recon("train", *mri), timeout_s=budget_s, required=False),
        Step("deliver", [ctx.python, "-c", _deliver_script(), str(ctx.dir("train_priors") / "export"), str(ctx.out)],
             timeout_s=120, required=False),
    ]


def _deliver_script() -> str:
    """Moves the shards into the output folder (the cards stay: each first shard holds its card),
    loads each prior back from its shards and denoises a batch, prints ``DELIVER_JSON {...}``."""
    return r'''
import json, shutil, sys
from pathlib import Path
import torch
from priors import load_prior
from priors.shards import find_shards
export, out = Path(sys.argv[1]), Path(sys.argv[2])
info = {}
for card in sorted(export.glob("*.yaml")):
    name = card.stem
    shards = find_shards(export / f"{name}.safetensors")
    entry = {"shards": [], "card": card.read_text()}
    for s in shards:
        shutil.move(str(s), str(out / s.name))
        entry["shards"].append({"file": s.name, "mib": round((out / s.name).stat().st_size / 2**20, 2)})
    if shards:
        prior = load_prior(str(out / shards[0].name))
        x = torch.randn(2, int(prior.card["network"]["in_channels"]), 64, 64)
        with torch.no_grad():
            eps = prior.eps(x, torch.tensor([100, 500]))
        entry["loads"] = bool(torch.isfinite(eps).all())
        entry["parameters"] = sum(p.numel() for p in prior.network.parameters())
    info[name] = entry
print("DELIVER_JSON " + json.dumps(info))
'''


def collect_train_priors(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = rec.setdefault("results", {})  # filled in place: kept when a check below fails
    out["train_minutes"] = ctx.train_minutes
    priors = printed_json(rec, "deliver", "DELIVER_JSON ")
    if priors is not None:
        out["priors"] = priors
    for name, entry in out.get("priors", {}).items():
        card = _yaml(entry.pop("card"))
        training = card.get("training", {})
        entry.update(steps=training.get("steps"), wall_time_s=training.get("wall_time_s"),
                     quality_psnr_db=card.get("quality", {}).get("psnr_db"), network=card.get("network"))
    files = sorted(p.name for p in ctx.out.iterdir() if p.is_file() and not p.name.startswith("."))
    out["out_files"] = files
    expected = {"device_run.json", "device_run.log"} | {s["file"] for e in out.get("priors", {}).values()
                                                         for s in e["shards"]}
    if len(expected | set(files)) > OUT_FILE_LIMIT:
        raise RuntimeError(f"{len(expected | set(files))} files in the output folder: a device call returns "
                           f"{OUT_FILE_LIMIT}")
    if any(s["mib"] > 16 for e in out.get("priors", {}).values() for s in e["shards"]):
        raise RuntimeError("a shard is over 16 MiB")
    if set(out.get("priors", {})) != {"ct-phantom-gpu", "mri-brain-gpu"} or not all(
            e.get("loads") for e in out["priors"].values()):
        raise RuntimeError("not both priors were exported and load back")
    return out


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text) or {}
