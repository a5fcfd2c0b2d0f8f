"""Reconstructing on the prior's pixel grid: the resampling operator and the sampler wrapper."""

import pytest
import torch

from operators.base import adjoint_error
from operators.cg import conjugate_gradient
from operators.ct import parallel_beam_ct
from operators.resampling import Resize, area_matrix, resize_matrix
from recon.errors import ConfigError
from recon.grid import OnPriorGrid, on_prior_grid, prior_grid_size


@pytest.mark.parametrize("n_out,n_in", [(224, 512), (512, 224), (7, 3), (3, 7), (6, 6)])
def test_resize_keeps_constants(n_out, n_in):
    assert torch.allclose(resize_matrix(n_out, n_in).sum(dim=1), torch.ones(n_out, dtype=torch.float64))


def test_resize_enlarging_is_bilinear_and_shrinking_is_the_cell_mean():
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    up = Resize((1, 12, 12), (30, 30))(x)
    reference = torch.nn.functional.interpolate(x, size=(30, 30), mode="bilinear", align_corners=False)
    assert torch.allclose(up, reference, atol=1e-12)
    assert torch.allclose(resize_matrix(4, 12), area_matrix(12, 3))


def test_resize_adjoint_is_exact():
    op = Resize((1, 40, 40), (96, 96))
    assert adjoint_error(op.forward, op.adjoint, torch.randn(2, 1, 40, 40), torch.randn(2, 1, 96, 96)) < 1e-6


class _Prior:
    def __init__(self, pixel_size_cm):
        self.card = {"data": {"pixel_size_cm": pixel_size_cm}}


class _LeastSquares:
    """A stand-in sampler: CG on the normal equations of whatever operator it is given."""

    nfe = 1

    def __init__(self, pixel_size_cm):
        self.prior = _Prior(pixel_size_cm)
        self.shapes = []

    def __call__(self, y, physics, **kwargs):
        self.shapes.append(tuple(physics.in_shape))
        aty = physics.adjoint(y)
        return conjugate_gradient(physics.normal, aty, torch.zeros_like(aty), iterations=200)


def test_grid_size_is_a_multiple_of_eight_over_the_same_field_of_view():
    assert prior_grid_size(512, 0.043, 0.1) == 224  # 22.0 cm / 1 mm = 220 -> 224
    assert prior_grid_size(256, 0.1, 0.1) == 256


def test_sampler_runs_on_the_prior_grid_and_returns_the_users():
    torch.manual_seed(0)
    size, pixel = 96, 0.05  # 4.8 cm in 0.5 mm pixels; the prior learned 1 mm: a 48-pixel grid
    physics = parallel_beam_ct(size, views=90, pixel_size=pixel)
    coarse = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 48, 48) * 0.3, 1)
    truth = Resize((1, 48, 48), (size, size))(coarse)
    y = physics(truth)
    sampler = _LeastSquares(0.1)
    methods = on_prior_grid({"s": sampler, "fbp": lambda y, p, **k: p.adjoint(y)}, truth, pixel)
    assert isinstance(methods["s"], OnPriorGrid) and not isinstance(methods["fbp"], OnPriorGrid)
    x = methods["s"](y, physics)
    assert sampler.shapes == [(1, 48, 48)] and x.shape == truth.shape
    # the truth lies in the range of the resampling, so the least-squares answer recovers it
    assert (x - truth).norm() / truth.norm() < 0.02


def test_matching_or_unknown_pixel_sizes_are_left_alone_and_tiny_grids_refused():
    image = torch.zeros(1, 1, 64, 64)
    same = _LeastSquares(0.105)
    assert on_prior_grid({"s": same}, image, 0.1)["s"] is same  # within 10 %
    unknown = _LeastSquares(None)
    assert on_prior_grid({"s": unknown}, image, 0.04)["s"] is unknown
    with pytest.raises(ConfigError, match="pixel size"):
        on_prior_grid({"s": _LeastSquares(1.0)}, image, 0.1)  # 6.4 cm at 1 cm pixels: 8 pixels
