"""Cone-beam CT through the torch projector (any device): astra's geometry, exact transpose, a ball's
analytic projections, the backend choice; on a GPU, agreement with astra's CUDA projector."""

import numpy as np
import pytest
import torch

from operators import adjoint_error
from operators.cone import (
    ConeBeamCT,
    cone_beam_ct,
    cone_beam_unavailable,
    cone_geometry,
)
from operators.cone_torch import TorchConeProjector, cone_vectors

REASON = cone_beam_unavailable()


def ball_volume(n: int, depth: int, centre, radius: float, sub: int = 4) -> np.ndarray:
    """``(depth, n, n)`` fraction of each voxel inside the ball (``sub^3`` points per voxel), centre
    ``(x, y, z)`` in the voxel units of :mod:`operators.cone_torch`."""
    def axis(size):
        return (np.arange(size * sub) + 0.5) / sub - size / 2

    zz, yy, xx = np.meshgrid(axis(depth), axis(n), axis(n), indexing="ij")
    inside = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (zz - centre[2]) ** 2 <= radius**2
    return inside.reshape(depth, sub, n, sub, n, sub).mean(axis=(1, 3, 5))


def ray_distances(geometry, point, flip_u: int = 1, flip_v: int = 1) -> np.ndarray:
    """``(rows, views, cols)`` distance from ``point`` to every detector pixel's ray, from the
    geometry vectors (``flip_*=-1``: a detector read the wrong way round)."""
    vec = cone_vectors(geometry)[None, :, None]
    rows = np.arange(geometry.detector_rows) - (geometry.detector_rows - 1) / 2
    cols = np.arange(geometry.detector_cols) - (geometry.detector_cols - 1) / 2
    pixel = (vec[..., 3:6] + flip_u * cols[None, None, :, None] * vec[..., 6:9]
             + flip_v * rows[:, None, None, None] * vec[..., 9:12])
    ray = pixel - vec[..., 0:3]
    ray /= np.linalg.norm(ray, axis=-1, keepdims=True)
    to_point = np.asarray(point) - vec[..., 0:3]
    return np.linalg.norm(to_point - (to_point * ray).sum(-1, keepdims=True) * ray, axis=-1)


def test_geometry_vectors_are_astras():
    import astra

    geometry = cone_geometry(20, 12, 7, start_degrees=10, source_distance=50, detector_distance=17)
    _, proj = geometry.astra_geometries()
    assert np.allclose(cone_vectors(geometry), astra.geom_2vec(proj)["Vectors"], rtol=0, atol=1e-12)


def test_backprojection_is_the_exact_transpose():
    """Signed random inputs on the Cauchy-Schwarz scale: 1e-17 measured in float64, 4e-9 in float32."""
    A = cone_beam_ct(20, 12, 9, pixel_size=0.3, backend="torch")
    g = torch.Generator().manual_seed(0)
    for dtype, bound in ((torch.float64, 1e-14), (torch.float32, 1e-6)):
        x = torch.randn((2, *A.in_shape), generator=g, dtype=dtype)
        y = torch.randn((2, *A.out_shape), generator=g, dtype=dtype)
        assert adjoint_error(A, A.adjoint, x, y) < bound
        assert A(x).dtype == A.adjoint(y).dtype == dtype


def test_blocks_do_not_change_the_result():
    """A small memory budget splits views and detector rows: same sums (each ray's steps are its own)."""
    geometry = cone_geometry(16, 10, 5)
    whole, pieces = TorchConeProjector(geometry), TorchConeProjector(geometry, max_samples=20_000)
    assert len(list(pieces._blocks(2))) > len(geometry.angles) > len(list(whole._blocks(2)))
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, 10, 16, 16), generator=g, dtype=torch.float64)
    y = torch.randn((2, geometry.detector_rows, 5, geometry.detector_cols), generator=g, dtype=torch.float64)
    assert torch.allclose(whole.project(x), pieces.project(x), rtol=0, atol=1e-12)
    assert torch.allclose(whole.backproject(y), pieces.backproject(y), rtol=0, atol=1e-12)


def test_projections_of_a_ball_are_its_chord_lengths():
    """A partial-volume ball of radius 8 voxels, 6 views: the central rays through the centred ball
    measure its diameter (within 0.4 %: the voxelised surface seen obliquely). Off centre, the
    relative error over the whole sinogram is 0.055 (the trilinear interpolant blurs the surface by
    about a voxel), 0.038 at most on rays 1.5 voxels inside the edge. A detector read the wrong way
    round (u or v flipped) gives 0.62 and 0.40."""
    n, depth, radius, voxel = 24, 24, 8.0, 0.1
    A = cone_beam_ct(n, depth, 6, pixel_size=voxel, backend="torch")
    centre = (0.0, 0.0, 0.0)
    sino = A(torch.tensor(ball_volume(n, depth, centre, radius))[None, None])[0, 0].numpy() / voxel
    centre_ray = sino[A.geometry.detector_rows // 2, :, A.geometry.detector_cols // 2]  # 16.00 or 15.94 measured
    assert np.allclose(centre_ray, 2 * radius, rtol=0.01)

    centre = (1.5, -2.0, 1.0)  # off centre on every axis, so any flipped axis shows
    sino = A(torch.tensor(ball_volume(n, depth, centre, radius))[None, None])[0, 0].numpy() / voxel
    distance = ray_distances(A.geometry, centre)
    chord = 2 * np.sqrt(np.clip(radius**2 - distance**2, 0, None))
    assert np.linalg.norm(sino - chord) / np.linalg.norm(chord) < 0.07
    inner = distance < radius - 1.5
    assert np.max(np.abs(sino - chord)[inner] / chord[inner]) < 0.05
    for flip_u, flip_v in ((-1, 1), (1, -1)):
        wrong = 2 * np.sqrt(np.clip(radius**2 - ray_distances(A.geometry, centre, flip_u, flip_v) ** 2, 0, None))
        assert np.linalg.norm(sino - wrong) / np.linalg.norm(wrong) > 0.2


def test_autograd_runs_the_adjoint():
    A = cone_beam_ct(12, 8, 4, pixel_size=0.5, backend="torch")
    x = torch.rand((1, *A.in_shape), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(A(x).sum(), x)
    assert torch.allclose(grad, A.adjoint(torch.ones((1, *A.out_shape), dtype=torch.float64)))
    assert torch.allclose(A(x), 0.5 * cone_beam_ct(12, 8, 4, backend="torch")(x))


def test_backend_choice_and_bad_input():
    geometry = cone_geometry(12, 8, 4)
    if REASON is not None:
        assert ConeBeamCT(geometry).backend == "torch"
        with pytest.raises(RuntimeError, match="cone-beam CT needs"):
            ConeBeamCT(geometry, backend="astra")
    else:
        assert ConeBeamCT(geometry).backend == "astra"
    assert isinstance(ConeBeamCT(geometry, backend="torch")._projector, TorchConeProjector)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        ConeBeamCT(geometry, backend="cuda")
    with pytest.raises(ValueError, match="step"):
        ConeBeamCT(geometry, backend="torch", step=0)
    with pytest.raises(ValueError, match=r"expected a real tensor \(\.\.\., 8, 12, 12\)"):
        ConeBeamCT(geometry, backend="torch")(torch.zeros(1, 1, 8, 12, 10))


@pytest.mark.cuda
@pytest.mark.skipif(REASON is not None, reason=f"skipped: {REASON}")
def test_torch_agrees_with_astra_on_the_gpu(record_property):
    """Same geometry through astra's cuda3d (Joseph stepping, bilinear texture lookups) and the torch
    projector (on CUDA and on the CPU). A CPU emulation of astra's stepping differs from the torch
    projector by 0.002 (blob) and 0.005 (ball) in relative norm; the bounds leave room for astra's
    low-precision texture weights, and any convention mismatch (a flipped axis) is far above them."""
    n, depth = 24, 16
    astra_op = cone_beam_ct(n, depth, 10, backend="astra")
    torch_op = cone_beam_ct(n, depth, 10, backend="torch")
    axis, axial = np.arange(n) - (n - 1) / 2, np.arange(depth) - (depth - 1) / 2
    zz, yy, xx = np.meshgrid(axial, axis, axis, indexing="ij")
    blob = np.exp(-((xx - 2) ** 2 + (yy + 1.5) ** 2 + (zz - 1) ** 2) / (2 * 3.0**2))
    ball = ball_volume(n, depth, (1.5, -2.0, 1.0), 6.5)
    for name, volume, bound in (("blob", blob, 0.02), ("ball", ball, 0.03)):
        x = torch.tensor(volume, dtype=torch.float32)[None, None]
        reference = astra_op(x.cuda()).cpu()
        ours = torch_op(x.cuda())
        error = float((ours.cpu() - reference).norm() / reference.norm())
        record_property(f"cone_torch_vs_astra_{name}", error)
        assert error < bound
        assert torch.allclose(ours.cpu(), torch_op(x), rtol=1e-4, atol=1e-4 * float(ours.abs().max()))
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn((2, *torch_op.in_shape), generator=g, device="cuda")
    y = torch.randn((2, *torch_op.out_shape), generator=g, device="cuda")
    assert adjoint_error(torch_op, torch_op.adjoint, x, y) < 1e-5
