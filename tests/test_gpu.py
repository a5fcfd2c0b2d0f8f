"""End-to-end checks on a CUDA GPU (all marked ``cuda``: skipped here, run by
``benchmarks/device_run.sh`` on a lent GPU): the samplers, precisions, MRI, volumes, ``torch.compile``
and one-GPU NCCL training. Operator adjoints on the GPU live beside their CPU tests
(``test_ct_matrix.py``, ``test_ct.py``, ``test_fbp.py``, ``test_cone.py``)."""

import math
import os
import subprocess
import sys

import pytest
import torch

from operators import (MultiCoilMRI, TransmissionNoise, adjoint_error, birdcage_maps, equispaced_mask,
                       parallel_beam_ct)
from operators.volume import parallel_beam_ct3d
from priors import load_prior
from recon import FBP, psnr
from recon.data.phantoms import make_phantom
from recon.samplers import DDS, DDS3D, DPS

pytestmark = pytest.mark.cuda
# RECON_GPU_TEST_DEVICE=cpu dry-runs this file on a CPU (conftest then does not skip it) to catch
# mistakes before device time is spent; the thresholds are meant for a GPU.
CUDA = torch.device(os.environ.get("RECON_GPU_TEST_DEVICE", "cuda"))


@pytest.fixture(scope="module")
def case():
    """A held-out 128² head phantom, 16 views, Poisson data (drawn on the CPU)."""
    x = torch.from_numpy(make_phantom("head", "test", 0, 128))[None, None]
    op = parallel_beam_ct(128, 16, pixel_size=25 / 128)
    y = TransmissionNoise(1e5)(op(x), generator=torch.Generator().manual_seed(0))
    return x, op, y


def _dds(prior, device, y, op, precision="fp32"):
    prior = prior.to(device)
    prior.precision = precision
    g = torch.Generator(device=device).manual_seed(0)
    return DDS(prior, steps=20, clamp=(-1.0, 1.0))(y.to(device), op, generator=g).cpu()


def test_dds_on_cuda_matches_the_cpu_quality(case):
    """Different devices draw different noise, so the images differ; their quality must not."""
    x, op, y = case
    prior = load_prior("ct-phantom-128")
    cpu, gpu = psnr(_dds(prior, "cpu", y, op), x), psnr(_dds(prior, CUDA, y, op), x)
    fbp = psnr(FBP("hann")(y, op), x)
    assert abs(gpu - cpu) < 1.0 and gpu > fbp + 2.0, (cpu, gpu, fbp)


def test_bf16_network_stays_within_a_tenth_of_a_db(case):
    x, op, y = case
    prior = load_prior("ct-phantom-128")
    fp32, bf16 = (psnr(_dds(prior, CUDA, y, op, p), x) for p in ("fp32", "bf16"))
    assert abs(fp32 - bf16) < 0.1, (fp32, bf16)


def test_dps_backpropagates_through_the_operator_on_cuda(case):
    x, op, y = case
    prior = load_prior("ct-phantom-128").to(CUDA)
    g = torch.Generator(device=CUDA).manual_seed(0)
    out = DPS(prior, steps=30, zeta=3.0)(y.to(CUDA), op, generator=g)
    assert out.device.type == CUDA.type and torch.isfinite(out).all()


def test_mri_operator_on_cuda_is_exactly_adjoint_and_matches_cpu():
    maps = birdcage_maps(8, (64, 64))
    op = MultiCoilMRI(maps, equispaced_mask(64, 4, 0.08).mask)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, *op.in_shape), generator=g, dtype=torch.complex128)
    y = torch.randn((2, *op.out_shape), generator=g, dtype=torch.complex128)
    gpu = op.to(CUDA)
    assert adjoint_error(gpu, gpu.adjoint, x.to(CUDA), y.to(CUDA)) < 1e-12
    assert torch.allclose(gpu(x.to(CUDA)).cpu(), op.cpu()(x), atol=1e-12)


def test_noncartesian_operator_on_cuda_matches_cpu():
    """cufinufft when installed, else a round trip through FINUFFT on the CPU: either way the
    same transform to its accuracy, on CUDA tensors, with autograd."""
    from operators import NonCartesianMRI, golden_angle_radial

    op = NonCartesianMRI(birdcage_maps(8, (64, 64)), golden_angle_radial(16, 128), eps=1e-6)
    g = torch.Generator().manual_seed(2)
    x = torch.randn((2, *op.in_shape), generator=g, dtype=torch.complex64)
    y = torch.randn((2, *op.out_shape), generator=g, dtype=torch.complex64)
    expected = op(x)
    gpu = op.to(CUDA)
    assert (gpu(x.to(CUDA)).cpu() - expected).abs().max() < 1e-4 * expected.abs().max()
    assert adjoint_error(gpu, gpu.adjoint, x.to(CUDA), y.to(CUDA)) < 1e-5
    z = x.to(CUDA).requires_grad_(True)
    gpu(z).abs().square().sum().backward()
    assert z.grad.device.type == CUDA.type


def test_dds3d_runs_a_volume_on_cuda():
    volume = torch.stack([torch.from_numpy(make_phantom("head", "test", 0, 64))] * 4)[None, None]
    op = parallel_beam_ct3d(64, 4, 8, pixel_size=25 / 64)
    y = op(volume.to(CUDA))
    prior = load_prior("ct-phantom-128").to(CUDA)
    out = DDS3D(prior, steps=10, chunk=2, clamp=(-1.0, 1.0))(y, op, generator=torch.Generator(CUDA).manual_seed(0))
    assert out.shape == volume.shape and out.device.type == CUDA.type and psnr(out.cpu(), volume) > 20


def test_compiled_network_matches_eager():
    """As ``compile=true`` builds it (``recon.build.build_prior``): inductor, contiguous layout."""
    from omegaconf import OmegaConf

    from recon.build import build_prior

    node = OmegaConf.create({"name": "ct-phantom-128", "checkpoint": None, "card": None, "scale": None})
    eager, compiled = build_prior(node, CUDA), build_prior(node, CUDA, compile=True)
    z = torch.randn(2, 1, 128, 128, device=CUDA)
    with torch.no_grad():
        reference = eager.eps(z, torch.tensor([10, 500], device=CUDA))
        out = compiled.eps(z, torch.tensor([10, 500], device=CUDA))
    assert float((out - reference).norm() / reference.norm()) < 1e-3


def test_one_gpu_nccl_training_exports_a_prior(tmp_path):
    overrides = ["prior.data.count=4", "prior.data.size=32", "train.steps=4", "train.crop=32", "train.warmup=1",
                 "train.checkpoint_every=2", "prior.network.channel_mult='1,2'", "eval_images=1", f"device={CUDA.type}",
                 f"out={tmp_path}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "recon",
           "train", *overrides]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    prior = load_prior(tmp_path / "ct-phantom-128.safetensors")
    assert prior.card["training"]["steps"] == 4
    assert all(math.isfinite(float(p.abs().sum())) for p in prior.network.parameters())
