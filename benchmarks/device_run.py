"""The prepared GPU check: every stage a subprocess with its own time limit, one JSON and one log.

    bash benchmarks/device_run.sh --minutes 7.5            # on a lent GPU (unpacks .device first)
    bash benchmarks/device_run.sh --stages train_priors --train-minutes 2   # the separate training call
    python benchmarks/device_run.py --smoke --out DIR      # the same stages on the CPU, tiny sizes
    python benchmarks/device_run.py --dry-run              # build and validate every command, run none

Stages (``--stages a,b`` selects; default all but ``train_priors``):

=============== ==========================================================================
env             nvidia-smi, torch/CUDA versions, the device, astra (imports, ``use_cuda``,
                its CUDA projector against the CPU one), where each packed module came from
tests           ``pytest -m cuda`` over the test files that mark tests ``cuda``
run_sparse_ct   ``python -m recon run task=sparse_ct device=cuda``
run_mri         ``task=mri_multicoil prior=mri_brain sampler=dds_mri device=cuda``
run_ct3d        ``task=ct3d_sparse device=cuda``
run_compile     ``task=sparse_ct device=cuda compile=true`` (against run_sparse_ct)
run_bf16        ``task=ct3d_sparse device=cuda precision=bf16`` (PSNR against run_ct3d)
train_ddp       ``torchrun --standalone --nproc_per_node 1 -m recon train`` (NCCL), 40 steps
figures         ``benchmarks/gpu_figures.py --precisions fp32,tf32,bf16`` in the time left
train_priors    (explicit only) a CT and an MRI prior with 4x the bundled width, each trained for
                ``--train-minutes``, exported as float16 shards of <= 15 MiB into the output
                folder (2 x 3 shards + JSON + log: the 8 files a device call returns)
=============== ==========================================================================

Nothing stops the run: a failed or timed-out stage is recorded (command, exit status, seconds,
the tail of its output) and the next one starts. ``device_run.json`` in the output folder
(``--out``, default ``$OUT``, else ``outputs/device_run``) is rewritten after every step, so a
run cut off keeps what finished; ``device_run.log`` holds everything printed. The overall budget
is ``--minutes``; each stage has its own cap, the stages before ``figures`` leave it 120 s, and a
stage that would start with less than its minimum left is recorded as skipped (reason "time
budget"). ``--smoke`` runs the same stages on
the CPU at tiny sizes (GPU-only steps such as nvidia-smi are recorded as "skipped: no GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
TRAIN_WIDTH = 64          # train_priors: num_channels (the bundled priors have 32): ~17.8M parameters
SHARD_MIB = 15            # train_priors: shard size (a device call returns files of <= 16 MiB)
OUT_FILE_LIMIT = 8        # files a device call returns


# --- stages ---------------------------------------------------------------------------------
@dataclass
class Step:
    """One subprocess of a stage."""

    name: str
    argv: list[str]
    timeout_s: float | None = None   # this step's own cap (inside the stage's)
    gpu_only: bool = False           # --smoke: recorded as skipped, "no GPU"
    required: bool = True            # a failure skips the stage's remaining steps
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    name: str
    summary: str
    cap_s: float                     # GPU run; --smoke uses smoke_cap_s
    min_s: float                     # skipped ("time budget") when less than this is left
    build: Callable[["Context"], list[Step]]
    collect: Callable[["Context", dict[str, Any]], dict[str, Any]] | None = None
    default: bool = True
    smoke_cap_s: float = 90.0
    reserve_s: float = 0.0           # GPU run: kept free for this stage by the stages before it


@dataclass
class Context:
    smoke: bool
    python: str
    tmp: Path
    out: Path
    train_minutes: float
    records: dict[str, dict[str, Any]]
    stage_timeout_s: float = 0.0     # the time the current stage may take (set before build)

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    def dir(self, name: str) -> Path:
        """A fresh (not yet existing) folder under the run's temporary root."""
        return self.tmp / name

    def recon(self, *args: str) -> list[str]:
        return [self.python, "-m", "recon", *args]


def _env_probe() -> str:
    """Python run by the env stage: prints one ``ENV_JSON {...}`` line."""
    return r'''
import importlib, json, os, platform, sys, time
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
start = time.perf_counter()
import torch
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            torch_import_s=round(time.perf_counter() - start, 2))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                multiprocessors=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                device_count=torch.cuda.device_count())
site = os.environ.get("DEVICE_SITE", "")
modules = {}
for name in ("astra", "hydra", "omegaconf", "antlr4", "nibabel", "pydicom", "sigpy", "pywt", "nilearn",
             "numpy", "scipy", "h5py", "safetensors", "numba", "recon"):
    try:
        m = importlib.import_module(name)
        where = os.path.dirname(getattr(m, "__file__", "") or "")
        modules[name] = {"version": str(getattr(m, "__version__", "")),
                         "packed": bool(site) and where.startswith(site)}
    except Exception as err:
        modules[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
info["modules"] = modules
try:
    import astra
    info["astra_use_cuda"] = bool(astra.use_cuda())
except Exception as err:
    info["astra_use_cuda"] = None
    info["astra_error"] = f"{type(err).__name__}: {err}"[:300]
if torch.cuda.is_available() and info.get("astra_use_cuda"):
    try:  # astra's own CUDA projector (backend="astra" on CUDA tensors) against its CPU projector
        from operators import parallel_beam_ct
        x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        cpu = parallel_beam_ct(64, 16, backend="astra")(x)
        gpu = parallel_beam_ct(64, 16, backend="astra").to("cuda")(x.cuda()).cpu()
        info["astra_cuda_projector_rel_diff"] = float((gpu - cpu).norm() / cpu.norm())
    except Exception as err:
        info["astra_cuda_projector_error"] = f"{type(err).__name__}: {err}"[:300]
print("ENV_JSON " + json.dumps(info))
'''


def build_env(ctx: Context) -> list[Step]:
    return [
        Step("nvidia-smi", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                            "--format=csv,noheader"], timeout_s=30, gpu_only=True, required=False),
        Step("probe", [ctx.python, "-c", _env_probe()], timeout_s=120),
    ]


def collect_env(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = rec.setdefault("results", {})  # filled in place: kept when a check below fails
    smi = _step(rec, "nvidia-smi")
    if smi and smi.get("status") == "passed":
        out["nvidia_smi"] = smi["output"].strip().splitlines()[0] if smi["output"].strip() else ""
    probe = _step(rec, "probe")
    for line in (probe or {}).get("output", "").splitlines():
        if line.startswith("ENV_JSON "):
            out.update(json.loads(line[len("ENV_JSON "):]))
    if not ctx.smoke and not out.get("cuda_available"):
        raise RuntimeError("torch sees no CUDA device")
    if out.get("modules", {}).get("astra", {}).get("error"):
        raise RuntimeError(f"astra does not import: {out['modules']['astra']['error']}")
    return out


def cuda_test_files() -> list[str]:
    """Test files that mark tests ``cuda`` (``mark.cuda`` in their text; not conftest.py)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.cuda" in p.read_text(errors="replace"))


def build_tests(ctx: Context) -> list[Step]:
    import importlib.util

    junit = ctx.dir("tests") / "junit.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    # One hung test must not take the stage (and its junit XML) with it: pytest-timeout where installed
    # (the GPU image has it).
    per_test = ["--timeout=100"] if importlib.util.find_spec("pytest_timeout") else []
    return [Step("pytest", [ctx.python, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "--continue-on-collection-errors",
                            "-p", "no:cacheprovider", f"--junitxml={junit}", *per_test, *cuda_test_files()])]


PROGRESS = re.compile(r"^(?:tests/\S+\.py )?([.FEsxX]+)\s*(?:\[\s*\d+%\])?$")  # -q: "..F.s  [ 40%]"


def collect_tests(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    junit = ctx.dir("tests") / "junit.xml"
    if not junit.is_file():  # stopped before the end: count the outcomes pytest -q printed per file
        marks = "".join(m.group(1) for line in (_step(rec, "pytest") or {}).get("output", "").splitlines()
                        if (m := PROGRESS.match(line.strip())))
        rec["results"] = {"files": cuda_test_files(), "passed": marks.count("."), "failed": marks.count("F"),
                          "errors": marks.count("E"), "skipped": marks.count("s"),
                          "note": "from pytest's progress lines (no junit XML: pytest did not finish)"}
        raise RuntimeError("pytest wrote no junit XML")
    root = ElementTree.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failures, skip_reasons = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                message = (node.get("message") or node.text or "").strip().splitlines()
                failures.append({"test": name, "kind": tag, "message": (message[0] if message else "")[:300]})
        for node in case.findall("skipped"):
            reason = (node.get("message") or "").strip()[:200]
            skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    out = {"files": cuda_test_files(), "passed": passed, "failed": counts["failures"], "errors": counts["errors"],
           "skipped": counts["skipped"], "failures": failures, "skip_reasons": skip_reasons}
    if ctx.smoke and passed == 0 and counts["skipped"] == counts["tests"]:
        out["note"] = "skipped: no GPU (every cuda test skips on the CPU; collected and imported)"
    return out


# Tiny sizes for --smoke, appended to the GPU command line (the same command otherwise).
SMOKE_2D = ["sampler.steps=3", "data.size=32"]
SMOKE_3D = ["data.size=32", "data.depth=2", "samplers.independent_2d.steps=2", "samplers.slice_coupled.steps=2",
            "samplers.dds_3d.steps=2"]


def merge(overrides: list[str], changes: list[str]) -> list[str]:
    """``overrides`` with each ``key=value`` of ``changes`` replacing the same key's, or appended."""
    out = list(overrides)
    for change in changes:
        key = change.split("=", 1)[0]
        at = next((i for i, o in enumerate(out) if o.split("=", 1)[0] == key), None)
        if at is None:
            out.append(change)
        else:
            out[at] = change
    return out


def _run_stage(name: str, overrides: list[str], smoke: list[str]) -> Callable[[Context], list[Step]]:
    """``python -m recon run`` with ``overrides`` (``SMOKE|GPU`` picks by mode, e.g. compile's
    backend), ``device=``, the ``smoke`` sizes in --smoke, and a fresh run folder."""
    def build(ctx: Context) -> list[Step]:
        chosen = [o.split("|")[0 if ctx.smoke else 1] if "|" in o else o for o in overrides]
        args = merge([*chosen, f"device={ctx.device}"], smoke if ctx.smoke else [])
        return [Step("recon run", ctx.recon("run", *args, f"hydra.run.dir={ctx.dir(name)}"))]
    return build


def _metrics(ctx: Context, name: str) -> dict[str, Any]:
    path = ctx.dir(name) / "metrics.json"
    if not path.is_file():
        raise RuntimeError(f"no {path.name} in the run folder")
    report = json.loads(path.read_text())
    keep = ("psnr", "ssim", "z_psnr", "seconds", "nfe")
    return {"task": report.get("task"), "data": report.get("data"),
            "methods": {m: {k: v for k, v in values.items() if k in keep} for m, values in report["methods"].items()}}


def _collect_run(name: str, compare_with: str | None = None, label: str = "") -> Callable[..., dict[str, Any]]:
    def collect(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
        out = _metrics(ctx, name)
        other = ctx.records.get(compare_with or "", {}).get("results", {}).get("methods") if compare_with else None
        if other:
            out[f"vs_{compare_with}"] = {
                m: {"psnr_delta_db": v["psnr"] - other[m]["psnr"], "seconds_ratio": v["seconds"] / other[m]["seconds"]
                    if other[m]["seconds"] else None}
                for m, v in out["methods"].items() if m in other}
            if label:
                out[f"vs_{compare_with}"]["note"] = label
        return out
    return collect


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
    import yaml

    if not path.is_file():
        raise RuntimeError(f"no model card {path.name}")
    return yaml.safe_load(path.read_text())


def collect_train_ddp(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    card = _card(ctx.dir("train_ddp") / "ct-phantom-128.yaml")
    training = card.get("training", {})
    steps, wall = training.get("steps"), training.get("wall_time_s")
    return {"steps": steps, "train_loop_s": wall, "steps_per_s": steps / wall if steps and wall else None,
            "process_s": _step(rec, "torchrun")["seconds"], "device": training.get("device"),
            "backend": "gloo" if ctx.smoke else "nccl", "quality_psnr_db": card.get("quality", {}).get("psnr_db")}


FIGURES_OVERHEAD_S = 20.0  # python and torch start-up before gpu_figures' own clock (its budget includes its set-up)


def build_figures(ctx: Context) -> list[Step]:
    overhead = 15.0 if ctx.smoke else FIGURES_OVERHEAD_S
    budget = max(ctx.stage_timeout_s - overhead, 1.0)
    argv = [ctx.python, str(REPO / "benchmarks" / "gpu_figures.py"), "--precisions", "fp32,tf32,bf16",
            "--budget-s", f"{6 if ctx.smoke else budget:.0f}", "--json", str(ctx.dir("figures") / "figures.json")]
    if ctx.smoke:  # a budget that runs some rows and skips others: both paths
        argv += ["--device", "cpu", "--layout", "small", "--size", "32", "--slices", "4", "--steps", "2",
                 "--dps-steps", "2"]
    return [Step("gpu_figures", argv)]


def collect_figures(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    path = ctx.dir("figures") / "figures.json"
    if not path.is_file():
        raise RuntimeError("gpu_figures wrote no JSON")
    return json.loads(path.read_text())


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
    deliver = _step(rec, "deliver")
    for line in (deliver or {}).get("output", "").splitlines():
        if line.startswith("DELIVER_JSON "):
            out["priors"] = json.loads(line[len("DELIVER_JSON "):])
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


STAGES: list[Stage] = [
    Stage("env", "GPU, torch, CUDA, astra", 60, 10, build_env, collect_env, smoke_cap_s=60),
    Stage("tests", "pytest -m cuda", 150, 30, build_tests, collect_tests),
    Stage("run_sparse_ct", "recon run task=sparse_ct", 60, 20,
          _run_stage("run_sparse_ct", ["task=sparse_ct"], SMOKE_2D), _collect_run("run_sparse_ct")),
    Stage("run_mri", "recon run task=mri_multicoil prior=mri_brain sampler=dds_mri", 75, 20,
          _run_stage("run_mri", ["task=mri_multicoil", "prior=mri_brain", "sampler=dds_mri"],
                     ["sampler.steps=2", "data.size=32"]), _collect_run("run_mri")),
    Stage("run_ct3d", "recon run task=ct3d_sparse", 75, 20,
          _run_stage("run_ct3d", ["task=ct3d_sparse"], SMOKE_3D), _collect_run("run_ct3d")),
    # compile=true: inductor (the GPU's point); in --smoke the eager backend, which still traces the network.
    Stage("run_compile", "recon run task=sparse_ct compile=true", 120, 30,
          _run_stage("run_compile", ["task=sparse_ct", "compile=eager|compile=true"], SMOKE_2D),
          _collect_run("run_compile", "run_sparse_ct", "compiled against eager; the compiled seconds include compiling")),
    Stage("run_bf16", "recon run task=ct3d_sparse precision=bf16", 75, 20,
          _run_stage("run_bf16", ["task=ct3d_sparse", "precision=bf16"], SMOKE_3D),
          _collect_run("run_bf16", "run_ct3d", "bf16 network against the fp32 run_ct3d")),
    Stage("train_ddp", "torchrun recon train (NCCL, one GPU)", 75, 20, build_train_ddp, collect_train_ddp),
    Stage("figures", "gpu_figures fp32/tf32/bf16", 10_000, 60, build_figures, collect_figures, smoke_cap_s=60,
          reserve_s=120),
    Stage("train_priors", "larger CT and MRI priors, fp16 shards into the output folder", 10_000, 60,
          build_train_priors, collect_train_priors, default=False, smoke_cap_s=150),
]

STAGE = {s.name: s for s in STAGES}


# --- running ----------------------------------------------------------------------------------
def _step(rec: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in rec.get("steps", []) if s["name"] == name), None)


class Runner:
    """Runs stages, streams every output line to stdout and the log, keeps the JSON current."""

    def __init__(self, args: argparse.Namespace, out: Path):
        self.args, self.out = args, out
        out.mkdir(parents=True, exist_ok=True)
        self.log_path, self.json_path = out / "device_run.log", out / "device_run.json"
        self.log_file = self.log_path.open("a", encoding="utf-8", errors="replace")
        self.lock = threading.Lock()
        self.start = time.time()
        self.deadline = self.start + 60 * args.minutes
        self.report: dict[str, Any] = {
            "tool": "benchmarks/device_run.py", "mode": "dry-run" if args.dry_run else "smoke" if args.smoke else "gpu",
            "argv": sys.argv[1:], "started": _now(), "finished": None, "budget_s": 60 * args.minutes,
            "elapsed_s": 0.0, "unpack": os.environ.get("DEVICE_RUN_UNPACK"), "out": str(out), "stages": {},
        }

    def log(self, message: str) -> None:
        line = f"[device_run {time.strftime('%H:%M:%S')} +{time.time() - self.start:6.1f}s] {message}"
        self._write(line)

    def _write(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def save(self) -> None:
        """Rewrite the JSON (atomically; steps' full outputs stay out of it: they are in the log)."""
        self.report["elapsed_s"] = round(time.time() - self.start, 1)
        tmp = self.json_path.with_name(".device_run.json.tmp")
        tmp.write_text(json.dumps(_without_output(self.report), indent=1, default=str))
        os.replace(tmp, self.json_path)

    def left(self) -> float:
        return self.deadline - time.time()

    def run_step(self, step: Step, timeout: float) -> dict[str, Any]:
        command = shlex.join(step.argv) if len(shlex.join(step.argv)) < 600 else shlex.join(step.argv)[:600] + " ..."
        rec: dict[str, Any] = {"name": step.name, "command": command, "timeout_s": round(timeout, 1)}
        self.log(f"$ {command}   (limit {timeout:.0f} s)")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "TQDM_MININTERVAL": "30",
               "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p),
               **step.env}
        lines: list[str] = []
        start = time.perf_counter()
        try:
            kwargs: dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
            proc = subprocess.Popen(step.argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kwargs)
        except OSError as err:
            rec.update(rc=None, seconds=0.0, status="failed", error=f"{type(err).__name__}: {err}", output="",
                       tail=str(err))
            self.log(f"  could not start: {err}")
            return rec

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]  # progress bars
                lines.append(text)
                self._write("  | " + text)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.log(f"  {step.name}: over its {timeout:.0f} s limit: stopping it")
            _kill_group(proc)
        else:
            _kill_group(proc, only_strays=True)  # helpers it left behind in its group (compile workers, ...)
        reader.join(timeout=10)
        seconds = time.perf_counter() - start
        output = "\n".join(lines)
        status = "timeout" if timed_out else "passed" if proc.returncode == 0 else "failed"
        rec.update(rc=proc.returncode, seconds=round(seconds, 2), status=status, output=output)
        if status != "passed":
            rec["tail"] = "\n".join(lines[-40:])[-4000:]
        self.log(f"  {step.name}: {status} (exit {proc.returncode}) in {seconds:.1f} s")
        return rec

    def run_stage(self, stage: Stage, ctx: Context, later: list[Stage] = ()) -> dict[str, Any]:
        """Run ``stage`` within its cap and the budget left, less what the ``later`` stages reserve."""
        rec: dict[str, Any] = {"status": "running", "summary": stage.summary, "started_at_s": round(
            time.time() - self.start, 1), "steps": []}
        self.report["stages"][stage.name] = rec
        reserved = 0.0 if ctx.smoke else sum(s.reserve_s for s in later)
        left = self.left() - reserved
        cap = stage.smoke_cap_s if ctx.smoke else stage.cap_s
        if left < stage.min_s:
            kept = f", {reserved:.0f} s kept for {', '.join(s.name for s in later if s.reserve_s)}" if reserved else ""
            rec.update(status="skipped",
                       reason=f"time budget ({max(left, 0):.0f} s left{kept}, needs {stage.min_s:.0f} s)")
            self.log(f"== {stage.name}: skipped, {rec['reason']}")
            self.save()
            return rec
        ctx.stage_timeout_s = min(cap, left)
        stage_deadline = time.time() + ctx.stage_timeout_s
        self.log(f"== {stage.name}: {stage.summary} (limit {ctx.stage_timeout_s:.0f} s, {left:.0f} s of the budget left)")
        self.save()
        start = time.perf_counter()
        try:
            steps = stage.build(ctx)
        except Exception as err:
            rec.update(status="failed", reason=f"could not build its commands: {type(err).__name__}: {err}",
                       tail=traceback.format_exc()[-3000:], seconds=0.0)
            self.log(f"== {stage.name}: failed: {rec['reason']}")
            self.save()
            return rec
        aborted: str | None = None
        notes = []
        for step in steps:
            skip = ("no GPU" if ctx.smoke and step.gpu_only else aborted
                    or ("time budget" if stage_deadline - time.time() < 1 else None))
            if skip:
                rec["steps"].append({"name": step.name, "command": shlex.join(step.argv)[:600], "status": "skipped",
                                     "reason": skip})
                notes.append(f"{step.name}: skipped: {skip}")
                self.log(f"  {step.name}: skipped: {skip}")
                continue
            limit = min(stage_deadline - time.time(), step.timeout_s or float("inf"))
            result = self.run_step(step, limit)
            rec["steps"].append(result)
            if result["status"] != "passed" and step.required:
                aborted = f"{step.name} {result['status']}"
            self.save()
        rec["seconds"] = round(time.perf_counter() - start, 1)
        ran = [s for s in rec["steps"] if s["status"] != "skipped" or s.get("reason") != "no GPU"]
        bad = [s for s in ran if s["status"] != "passed"]
        rec["status"] = "passed" if not bad else "timeout" if any(s["status"] == "timeout" for s in bad) else "failed"
        if notes:
            rec["notes"] = notes
        if stage.collect is not None:
            try:
                rec["results"] = stage.collect(ctx, rec)
            except Exception as err:  # what was collected before the problem stays (see collect_env)
                rec["status"] = "failed" if rec["status"] == "passed" else rec["status"]
                rec["collect_error"] = f"{type(err).__name__}: {err}"
        for s in rec["steps"]:
            s.pop("output", None)
        self.log(f"== {stage.name}: {rec['status']} in {rec['seconds']:.1f} s"
                 + (f" ({rec['collect_error']})" if "collect_error" in rec else ""))
        self.save()
        return rec

    def finish(self) -> int:
        self.report["finished"] = _now()
        stages = self.report["stages"]
        self.report["summary"] = {k: [n for n, r in stages.items() if r["status"] == k]
                                  for k in ("passed", "failed", "timeout", "skipped", "validated")}
        self.save()
        self.log("summary: " + ", ".join(f"{n} {r['status']}" + (f" ({r.get('seconds', 0):.0f} s)" if "seconds" in r
                                                                   else "") for n, r in stages.items()))
        self.log(f"wrote {self.json_path} and {self.log_path}")
        self.log_file.close()
        return 0 if all(r["status"] in ("passed", "skipped", "validated") for r in stages.values()) else 1


def _without_output(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_output(v) for k, v in value.items() if k != "output"}
    if isinstance(value, list):
        return [_without_output(v) for v in value]
    return value


def _kill_group(proc: subprocess.Popen, only_strays: bool = False) -> None:
    """End the step's process group (it was started as its leader): TERM, then KILL. With
    ``only_strays`` the step has exited and whatever is left of its group is killed."""
    if only_strays:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- validation (--dry-run) ------------------------------------------------------------------
def validate(step: Step) -> str:
    """Check a step's command without running it: Hydra overrides compose, scripts and files
    exist, gpu_figures' arguments parse. Returns what was checked; raises on a problem."""
    argv = step.argv
    if "recon" in argv and argv[argv.index("recon") - 1] == "-m":
        at = argv.index("recon")
        command, overrides = argv[at + 1], argv[at + 2:]
        sys.path.insert(0, str(REPO))
        from omegaconf import OmegaConf

        from recon.config import load_config

        cfg = load_config(overrides, config_name={"run": "config", "train": "train"}[command])
        if command == "train":
            from priors.train import TrainSettings

            TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True), seed=int(cfg.seed))
        return f"recon {command}: {len(overrides)} overrides compose"
    if argv[0] == "nvidia-smi":
        return "nvidia-smi (on the GPU machine)"
    if "pytest" in argv:
        files = [a for a in argv if a.startswith("tests/")]
        if not files or not all((REPO / f).is_file() for f in files):
            raise ValueError(f"pytest: no cuda test files ({files})")
        return f"pytest over {len(files)} files"
    if argv[1:2] == ["-c"]:
        compile(argv[2], step.name, "exec")
        return "python -c: compiles"
    script = Path(argv[1])
    if not script.is_file():
        raise ValueError(f"{script}: no such script")
    if script.name == "gpu_figures.py":
        sys.path.insert(0, str(REPO / "benchmarks"))
        from gpu_figures import build_parser

        build_parser().parse_args(argv[2:])
        return "gpu_figures: arguments parse"
    return f"{script.name}: exists"


def dry_run(runner: Runner, ctx: Context, stages: list[Stage]) -> None:
    for stage in stages:
        rec: dict[str, Any] = {"status": "validated", "summary": stage.summary, "modes": {}}
        runner.report["stages"][stage.name] = rec
        for smoke in (False, True):
            ctx.smoke, ctx.stage_timeout_s = smoke, stage.smoke_cap_s if smoke else min(stage.cap_s, 600)
            mode = "smoke" if smoke else "gpu"
            try:
                checked = [{"name": s.name, "command": shlex.join(s.argv)[:600], "checked": validate(s)}
                           for s in stage.build(ctx)]
                rec["modes"][mode] = checked
            except Exception as err:
                rec["status"] = "failed"
                rec["modes"][mode] = {"error": f"{type(err).__name__}: {err}"[:1000]}
        runner.log(f"== {stage.name}: {rec['status']}")
        runner.save()


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--smoke", action="store_true", help="on the CPU at tiny sizes (the test suite's check)")
    parser.add_argument("--dry-run", action="store_true",
                        help="build and validate every stage's commands (GPU and smoke), run none")
    parser.add_argument("--stages", default=None,
                        help="comma-separated (default: all but train_priors; with --dry-run: all)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="overall budget (default 7.5; for train_priors alone 2 x --train-minutes + 3.5)")
    parser.add_argument("--train-minutes", type=float, default=2.0, help="train_priors: minutes per prior")
    parser.add_argument("--out", type=Path, default=None, help="default $OUT, else outputs/device_run")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary run folders")
    args = parser.parse_args(argv)
    if args.stages:
        names = [n.strip() for n in args.stages.split(",") if n.strip()]
        if unknown := [n for n in names if n not in STAGE]:
            parser.error(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGE)}")
        stages = [STAGE[n] for n in names]
    else:
        stages = [s for s in STAGES if s.default or args.dry_run]
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "outputs" / "device_run")
    out = out.resolve()
    if args.smoke and any(s.name == "train_priors" for s in stages) and args.train_minutes == 2.0:
        args.train_minutes = 0.05
    if args.minutes is None:
        only_training = [s.name for s in stages] == ["train_priors"] and not args.dry_run
        args.minutes = 2 * args.train_minutes + 3.5 if only_training else 7.5
    runner = Runner(args, out)
    tmp = Path(tempfile.mkdtemp(prefix="device_run_"))
    ctx = Context(args.smoke, sys.executable, tmp, out, args.train_minutes, runner.report["stages"])
    runner.log(f"device_run: {runner.report['mode']}, stages {', '.join(s.name for s in stages)}; budget "
               f"{args.minutes:g} min; output {out}; temporary {tmp}")
    if runner.report["unpack"]:
        runner.log(f"packed site: {runner.report['unpack']}")
    try:
        if args.dry_run:
            dry_run(runner, ctx, stages)
        else:
            for i, stage in enumerate(stages):
                runner.run_stage(stage, ctx, stages[i + 1:])
    except KeyboardInterrupt:
        runner.log("interrupted")
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
