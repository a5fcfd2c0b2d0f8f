"""Cone-beam CT through astra's CUDA 3D projector: the geometry on any machine, the operator on a GPU
(the torch projector: ``test_cone_torch.py``)."""

import numpy as np
import pytest
import torch

from operators import adjoint_error
from operators.cone import cone_beam_ct, cone_beam_unavailable, cone_geometry

REASON = cone_beam_unavailable()


def needs_gpu(test):
    """A CUDA test (``pytest -m cuda``) that also needs astra's CUDA build."""
    return pytest.mark.cuda(pytest.mark.skipif(REASON is not None, reason=f"skipped: {REASON}")(test))


def test_without_a_gpu_the_operator_says_what_is_missing():
    if REASON is None:
        pytest.skip("a CUDA GPU and a CUDA astra are present")
    with pytest.raises(RuntimeError, match="cone-beam CT needs"):
        cone_beam_ct(32, 8, 20, backend="astra")  # "auto" falls back to the torch projector


def test_default_detector_sees_the_whole_volume_from_every_angle():
    import astra.experimental

    n, depth = 64, 16
    geometry = cone_geometry(n, depth, views=24)
    _, proj = geometry.astra_geometries()
    half = n / 2
    corners = [(x, y, z) for x in (-half, half) for y in (-half, half) for z in (-depth / 2, depth / 2)]
    for view in range(len(geometry.angles)):
        for x, y, z in corners:
            u, v = astra.experimental.projectPoint(proj, x, y, z, view)
            assert 0 <= u <= geometry.detector_cols and 0 <= v <= geometry.detector_rows
    centre = astra.experimental.projectPoint(proj, 0.0, 0.0, 0.0, 0)
    assert centre == pytest.approx(((geometry.detector_cols - 1) / 2, (geometry.detector_rows - 1) / 2), abs=0.51)
    with pytest.raises(ValueError, match="inside the volume"):
        cone_geometry(n, depth, 24, source_distance=20)


@needs_gpu
def test_cone_beam_adjoint_on_the_gpu(record_property):
    """astra's BP3D is not the exact transpose of its FP3D: measured with signed random inputs on
    the Cauchy-Schwarz scale (non-negative inputs hide a mismatch), recorded in the junit XML
    (``benchmarks/device_run.sh`` reports it) and bounded loosely."""
    A = cone_beam_ct(48, 12, 30, pixel_size=0.2).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn((2, *A.in_shape), generator=g, device="cuda")
    y = torch.randn((2, *A.out_shape), generator=g, device="cuda")
    error = adjoint_error(A, A.adjoint, x, y)
    record_property("cone_beam_adjoint_error", error)
    assert error < 0.05


@needs_gpu
def test_cone_beam_central_ray_through_a_ball_is_its_diameter():
    n, depth, radius, voxel = 48, 48, 12.0, 0.1
    A = cone_beam_ct(n, depth, 8, pixel_size=voxel).cuda()
    axis = torch.arange(n, device="cuda") - (n - 1) / 2
    zz, yy, xx = torch.meshgrid(torch.arange(depth, device="cuda") - (depth - 1) / 2, axis, axis, indexing="ij")
    ball = ((xx**2 + yy**2 + zz**2) <= radius**2).float()[None, None]
    sino = A(ball)[0, 0].cpu().numpy()  # (rows, views, cols)
    centre = sino[sino.shape[0] // 2, :, sino.shape[2] // 2]
    assert np.allclose(centre, 2 * radius * voxel, rtol=0.05)
    x = ball.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(A(x).sum(), x)
    assert torch.allclose(grad, A.adjoint(torch.ones((1, *A.out_shape), device="cuda")))
