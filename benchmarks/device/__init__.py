"""The stages of ``benchmarks/device_run.py`` (the driver: arguments, time budget, subprocesses,
JSON and log), in the order a run takes them. Each :class:`~device.stage.Stage` builds its
commands for the GPU run or for ``--smoke`` and collects their results into ``device_run.json``:

* :mod:`device.checks`: ``env``, ``tests``, ``projector`` (the device, the ``cuda`` tests, the CT
  projectors);
* :mod:`device.runs`: ``run_sparse_ct``, ``run_mri``, ``run_ct3d``, ``run_compile``, ``run_bf16``,
  ``run_ct3d_wedge``, ``figures`` (the project's workloads);
* :mod:`device.training`: ``train_ddp`` and the explicit-only ``train_priors``.

``benchmarks/device/cufft_stub.c`` beside them is no Python: ``benchmarks/device_pack.sh`` compiles
it into the archive that travels to the GPU machine.
"""

from .checks import build_env, build_projector, build_tests, collect_env, collect_projector, collect_tests
from .runs import SMOKE_2D, SMOKE_3D, SMOKE_WEDGE, build_figures, build_run, collect_figures, collect_run
from .stage import Context, Stage, Step
from .training import build_train_ddp, build_train_priors, collect_train_ddp, collect_train_priors

STAGES: list[Stage] = [
    Stage("env", "GPU, torch, CUDA, astra", 60, 10, build_env, collect_env, smoke_cap_s=60),
    Stage("tests", "pytest -m cuda", 200, 30, build_tests, collect_tests),  # compiles once, trains once
    Stage("projector", "ct_projector: matrix and astra CUDA projectors, slices/s and adjoint error", 90, 20,
          build_projector, collect_projector, smoke_cap_s=60),
    Stage("run_sparse_ct", "recon run task=sparse_ct", 60, 20,
          build_run("run_sparse_ct", ["task=sparse_ct"], SMOKE_2D), collect_run("run_sparse_ct")),
    Stage("run_mri", "recon run task=mri_multicoil prior=mri_brain samplers=dds_mri", 75, 20,
          build_run("run_mri", ["task=mri_multicoil", "prior=mri_brain", "samplers=dds_mri"],
                    ["samplers.dds.steps=2", "data.size=32"]), collect_run("run_mri")),
    Stage("run_ct3d", "recon run task=ct3d_sparse", 75, 20,
          build_run("run_ct3d", ["task=ct3d_sparse"], SMOKE_3D), collect_run("run_ct3d")),
    # compile=true: inductor (the GPU's point); in --smoke the eager backend, which still traces the network.
    Stage("run_compile", "recon run task=sparse_ct compile=true", 120, 30,
          build_run("run_compile", ["task=sparse_ct", "compile=eager|compile=true"], SMOKE_2D),
          collect_run("run_compile", "run_sparse_ct", "compiled against eager; the compiled seconds include compiling")),
    Stage("run_bf16", "recon run task=ct3d_sparse precision=bf16", 75, 20,
          build_run("run_bf16", ["task=ct3d_sparse", "precision=bf16"], SMOKE_3D),
          collect_run("run_bf16", "run_ct3d", "bf16 network against the fp32 run_ct3d")),
    # The whole 128^3 head at the wedge: the perpendicular-prior sampler against independent 2D and 3D DDS.
    Stage("run_ct3d_wedge", "recon run task=ct3d_limited_angle data.depth=null, perpendicular priors", 120, 30,
          build_run("run_ct3d_wedge", ["task=ct3d_limited_angle", "data.depth=null",
                                       "samplers=[independent_2d,dds_3d,perpendicular]"], SMOKE_WEDGE),
          collect_run("run_ct3d_wedge")),
    Stage("train_ddp", "torchrun recon train (NCCL, one GPU)", 75, 20, build_train_ddp, collect_train_ddp),
    Stage("figures", "gpu_figures fp32/tf32/bf16", 10_000, 60, build_figures, collect_figures, smoke_cap_s=60,
          reserve_s=120),
    Stage("train_priors", "larger CT and MRI priors, fp16 shards into the output folder", 10_000, 60,
          build_train_priors, collect_train_priors, default=False, smoke_cap_s=150),
]

STAGE = {s.name: s for s in STAGES}

__all__ = ["STAGE", "STAGES", "Context", "Stage", "Step"]
