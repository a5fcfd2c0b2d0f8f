"""CT operators: adjointness, autograd, shapes, geometry convention, analytic accuracy, leaks."""

import copy
import gc
import math
import re

import astra
import numpy as np
import pytest
import torch

from operators import (
    FanBeamCT,
    ParallelBeamCT,
    fan_beam_ct,
    inner,
    limited_angle_angles,
    parallel_beam_ct,
    sparse_view_angles,
)
from recon.data.ellipses import SHEPP_LOGAN_MODIFIED, ellipse_line_integrals, rasterize_ellipses

N = 32


def make(kind, n=N, views=12, **kw):
    return parallel_beam_ct(n, views, **kw) if kind == "parallel" else fan_beam_ct(n, views, **kw)


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_angle_sets():
    def degrees(*values):
        return torch.deg2rad(torch.tensor(values, dtype=torch.float64))

    assert torch.allclose(sparse_view_angles(4), degrees(0, 45, 90, 135))
    assert torch.allclose(sparse_view_angles(3, 360, 30), degrees(30, 150, 270))
    wedge = limited_angle_angles(90)
    assert len(wedge) == 90 and math.isclose(math.degrees(wedge[-1]), 89.0)
    assert len(limited_angle_angles(60, views=20, start_degrees=10)) == 20
    with pytest.raises(ValueError):
        sparse_view_angles(0)


@pytest.mark.parametrize("kind", ["parallel", "fan"])
@pytest.mark.parametrize("pixel_size", [1.0, 0.3])
def test_adjoint_identity(kind, pixel_size):
    op = make(kind, pixel_size=pixel_size)
    x, y = randn((2, *op.in_shape), 0), randn((2, *op.out_shape), 1)
    for a in (op, op.H):
        x_, y_ = (x, y) if a is op else (y, x)
        lhs, rhs = inner(a(x_), y_), inner(x_, a.adjoint(y_))
        assert torch.allclose(lhs, rhs, rtol=1e-4, atol=0), (lhs, rhs)


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_pixel_size_scales_line_integrals(kind):
    x = randn((1, 1, N, N), 2).float()
    assert torch.allclose(make(kind, pixel_size=0.25)(x), 0.25 * make(kind)(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_autograd_matches_adjoint(kind):
    op = make(kind)
    x = randn((2, *op.in_shape), 3).float().requires_grad_()
    y = randn((2, *op.out_shape), 4).float()
    residual = op(x) - y
    (0.5 * residual.pow(2).sum()).backward()
    assert torch.allclose(x.grad, op.adjoint(residual.detach()), rtol=1e-5, atol=1e-4)

    z = y.clone().requires_grad_()
    target = x.detach()
    misfit = op.adjoint(z) - target
    (0.5 * misfit.pow(2).sum()).backward()
    assert torch.allclose(z.grad, op(misfit.detach()), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_shapes_and_batch_independence(kind):
    op = make(kind, views=7)
    x = randn((3, 1, N, N), 5).float()
    y = op(x)
    assert y.shape == (3, 1, 7, op.geometry.detector_count) and y.dtype == torch.float32
    assert op.adjoint(y).shape == x.shape
    singles = torch.cat([op(x[i : i + 1]) for i in range(3)])
    assert torch.equal(y, singles)
    assert op(x.double()).dtype == torch.float64
    assert "angles" in dict(op.named_buffers())


def test_default_detectors_cover_the_image():
    assert ParallelBeamCT(N, [0.0]).geometry.detector_count == math.ceil(math.sqrt(2) * N) + 1
    for op in (parallel_beam_ct(N, 8), fan_beam_ct(N, 8)):
        sino = op(torch.ones(1, 1, N, N))[0, 0]
        assert sino[:, 0].abs().max() == 0 and sino[:, -1].abs().max() == 0  # nothing falls off the detector
    fan = FanBeamCT(N, [0.0])
    g = fan.geometry
    assert (g.source_distance, g.detector_distance, g.detector_spacing) == (2 * N, N, 1.5)


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_convention_single_pixel(kind):
    """Pixel (x, y) = (4.5, 5.5) px casts its shadow at s = x for theta = 0, s = y for theta = pi/2.

    Fan beam: the source sits at source_distance * (sin theta, -cos theta), so the shadow is
    magnified by (source + detector distance) / (source distance - <pixel, source direction>).
    """
    n = 16
    op = (ParallelBeamCT if kind == "parallel" else FanBeamCT)(n, [0.0, math.pi / 2])
    x = torch.zeros(1, 1, n, n)
    x[0, 0, 2, 12] = 1.0  # row 2 -> y = +5.5, column 12 -> x = +4.5 (pixels)
    sino = op(x)[0, 0]
    g = op.geometry
    bins = (torch.arange(g.detector_count) - (g.detector_count - 1) / 2) * g.detector_spacing
    shadow = (sino * bins).sum(dim=1) / sino.sum(dim=1)
    expected = torch.tensor([4.5, 5.5])
    if kind == "fan":
        depth = g.source_distance - torch.tensor([-5.5, 4.5])  # source below at theta = 0, right at pi/2
        expected = expected * (g.source_distance + g.detector_distance) / depth
    assert torch.allclose(shadow, expected, atol=0.3 * g.detector_spacing), (shadow, expected)


def _analytic(kind, op, n, subsamples=4):
    """Analytic Shepp-Logan line integrals (pixel units), averaged over each detector bin's width.

    Normalised units: the image spans 2 units = n pixels.
    """
    g = op.geometry
    theta = np.asarray(g.angles)
    bins = (np.arange(g.detector_count) - (g.detector_count - 1) / 2) * g.detector_spacing
    total = np.zeros((theta.size, bins.size))
    for d in ((np.arange(subsamples) + 0.5) / subsamples - 0.5) * g.detector_spacing:
        if kind == "parallel":
            total += ellipse_line_integrals(SHEPP_LOGAN_MODIFIED, theta, (bins + d) * 2 / n)
            continue
        # each fan ray is the parallel line (theta - gamma, source_distance sin gamma)
        for k, u in enumerate(bins + d):
            gamma = math.atan(u / (g.source_distance + g.detector_distance))
            s = g.source_distance * math.sin(gamma) * 2 / n
            total[:, k] += ellipse_line_integrals(SHEPP_LOGAN_MODIFIED, theta - gamma, [s])[:, 0]
    return total / subsamples * n / 2


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_shepp_logan_matches_analytic_line_integrals(kind):
    n = 256
    op = make(kind, n=n, views=24)
    phantom = torch.tensor(rasterize_ellipses(SHEPP_LOGAN_MODIFIED, n, supersample=4), dtype=torch.float32)
    sino = op(phantom[None, None])[0, 0].double().numpy()
    reference = _analytic(kind, op, n)
    error = np.linalg.norm(sino - reference) / np.linalg.norm(reference)
    assert error < 0.02, error


def _projector_count(capfd) -> int:
    capfd.readouterr()
    astra.projector.info()
    return len(re.findall(r"^\d+\s", capfd.readouterr().out, flags=re.M))


def test_no_astra_projector_leak(capfd):
    x = torch.rand(2, 1, 16, 16)
    gc.collect()
    before = _projector_count(capfd)
    op = parallel_beam_ct(16, 8, backend="astra")
    for _ in range(300):
        op(x)
        op.adjoint(op(x))
    clone = copy.deepcopy(op)
    assert torch.equal(clone(x), op(x))
    assert _projector_count(capfd) == before + 2
    for _ in range(50):
        fan_beam_ct(16, 4, backend="astra")(x)
    del op, clone
    gc.collect()
    assert _projector_count(capfd) == before
    matrix_ops = [parallel_beam_ct(16, 5 + i % 3) for i in range(20)] + [fan_beam_ct(16, 4)]
    for op in matrix_ops:
        op.adjoint(op(x))
    assert _projector_count(capfd) == before  # the matrix backend frees astra's projector once built


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_cuda_matches_cpu(kind):
    op = make(kind)
    x = randn((2, 1, N, N), 6).float()
    y = op.to("cuda")(x.cuda())
    assert y.is_cuda and torch.allclose(y.cpu(), make(kind)(x), rtol=1e-5, atol=1e-5 * float(y.abs().max()))
