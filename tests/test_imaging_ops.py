"""Inpainting, downsampling and Gaussian blur: exact adjoints, reference outputs, seeded masks."""

import pytest
import torch
import torch.nn.functional as F

from operators import (
    Downsampling,
    GaussianBlur,
    Inpainting,
    box_mask,
    inner,
    random_pixel_mask,
    stroke_mask,
)
from operators.blur import gaussian_kernel


def randn(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


OPERATORS = {
    "inpaint-2d": lambda: Inpainting(random_pixel_mask((12, 10), 0.5, seed=0), channels=2),
    "inpaint-3d": lambda: Inpainting(random_pixel_mask((3, 12, 10), 0.3, seed=1)),
    "area-2": lambda: Downsampling((2, 12, 8), 2),
    "area-4": lambda: Downsampling((1, 16, 12), 4),
    "bicubic-2": lambda: Downsampling((2, 12, 8), 2, mode="bicubic"),
    "bicubic-4": lambda: Downsampling((1, 16, 12), 4, mode="bicubic"),
    "blur-reflect": lambda: GaussianBlur((2, 12, 9), 1.2),
    "blur-circular": lambda: GaussianBlur((2, 12, 9), 1.2, boundary="circular"),
    "blur-zero": lambda: GaussianBlur((2, 12, 9), 1.2, boundary="zero"),
    "blur-wide-reflect": lambda: GaussianBlur((1, 7, 5), 3.0, kernel_size=21),
    "blur-wide-circular": lambda: GaussianBlur((1, 7, 5), 3.0, kernel_size=21, boundary="circular"),
}


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_adjoint_identity(name, dtype):
    op = OPERATORS[name]()
    x, y = randn((3, *op.in_shape), dtype, 1), randn((3, *op.out_shape), dtype, 2)
    assert op(x).shape == (3, *op.out_shape) and op(x).dtype == dtype
    assert torch.allclose(inner(op(x), y), inner(x, op.adjoint(y)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 4])
def test_downsampling_matches_torch_and_keeps_constants(factor):
    x = randn((2, 3, 16, 24))
    area, bicubic = Downsampling((3, 16, 24), factor), Downsampling((3, 16, 24), factor, mode="bicubic")
    assert area(x).shape == (2, 3, 16 // factor, 24 // factor)
    assert torch.allclose(area(x), F.avg_pool2d(x, factor), atol=1e-14)
    reference = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True)
    assert torch.allclose(bicubic(x), reference, atol=1e-12)
    y = area(x)
    nearest = y.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    assert torch.allclose(area.adjoint(y), nearest / factor**2, atol=1e-14)
    constant = torch.full((1, 3, 16, 24), 2.5, dtype=torch.float64)
    for op in (area, bicubic):
        assert torch.allclose(op(constant), torch.full_like(op(constant), 2.5), atol=1e-12)
    assert abs(area.norm(iterations=20) - 1 / factor) < 1e-5  # A A^T = I / f^2


def test_downsampling_rejects_bad_settings():
    with pytest.raises(ValueError, match="divisible"):
        Downsampling((1, 10, 12), 4)
    with pytest.raises(ValueError, match="unknown mode"):
        Downsampling((1, 8, 8), 2, mode="nearest")


@pytest.mark.parametrize("boundary,pad", [("reflect", "reflect"), ("circular", "circular"), ("zero", "constant")])
def test_blur_matches_padded_convolution(boundary, pad):
    x = randn((2, 3, 20, 17))
    kernel = gaussian_kernel(1.5)
    r = len(kernel) // 2
    weights = (kernel[:, None] * kernel[None]).expand(3, 1, -1, -1)
    reference = F.conv2d(F.pad(x, (r, r, r, r), mode=pad), weights, groups=3)
    assert torch.allclose(GaussianBlur((3, 20, 17), 1.5, boundary=boundary)(x), reference, atol=1e-14)


def test_blur_kernel_constants_mean_and_symmetry():
    kernel = gaussian_kernel(2.0)
    assert len(kernel) == 13 and torch.isclose(kernel.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(kernel, kernel.flip(0))
    x = randn((2, 1, 16, 16))
    circular = GaussianBlur((1, 16, 16), 2.0, boundary="circular")
    assert torch.allclose(circular(x).mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-14)
    constant = torch.full((1, 1, 16, 16), -1.5, dtype=torch.float64)
    for boundary in ("reflect", "circular"):
        assert torch.allclose(GaussianBlur((1, 16, 16), 2.0, boundary=boundary)(constant), constant, atol=1e-14)
    for boundary in ("circular", "zero"):  # symmetric kernel: self-adjoint
        op = GaussianBlur((1, 16, 16), 2.0, boundary=boundary)
        assert torch.allclose(op(x), op.adjoint(x), atol=1e-14)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(1.0, kernel_size=4)
    with pytest.raises(ValueError, match="boundary"):
        GaussianBlur((1, 8, 8), 1.0, boundary="replicate")


def test_operators_follow_the_dtype_and_device_of_their_input():
    op = GaussianBlur((1, 8, 8), 1.0)
    assert op(torch.ones(1, 1, 8, 8)).dtype == torch.float32
    assert op.to(torch.device("cpu")).rows.device.type == "cpu"
    inpaint = Inpainting(box_mask((8, 8), box=(2, 3), seed=0))
    x = randn((2, 1, 8, 8), torch.complex64)
    assert inpaint(x).dtype == torch.complex64
    assert torch.equal(inpaint(x), inpaint.mask * x)
    assert torch.equal(inpaint.normal(x), inpaint(x))  # A^H A = A


def test_inpainting_rejects_non_binary_masks():
    with pytest.raises(ValueError, match="0/1"):
        Inpainting(torch.full((4, 4), 0.5))


def test_box_mask_fraction_position_and_seed():
    mask = box_mask((64, 48), 0.25, seed=3)
    assert mask.shape == (64, 48) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    side = round((0.25 * 64 * 48) ** 0.5)
    assert int((mask == 0).sum()) == side * side
    rows, cols = (mask == 0).nonzero().T
    assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    assert int((box_mask((32, 32), box=(5, 7), seed=0) == 0).sum()) == 35
    assert torch.equal(mask, box_mask((64, 48), 0.25, seed=3))
    assert not torch.equal(mask, box_mask((64, 48), 0.25, seed=4))
    with pytest.raises(ValueError, match="fit"):
        box_mask((8, 8), box=(9, 2))


def test_random_pixel_mask_fraction_and_seed():
    mask = random_pixel_mask((50, 40), 0.7, seed=0)
    assert mask.shape == (50, 40) and int((mask == 0).sum()) == 1400
    assert torch.equal(mask, random_pixel_mask((50, 40), 0.7, seed=0))
    assert not torch.equal(mask, random_pixel_mask((50, 40), 0.7, seed=1))
    assert random_pixel_mask((2, 10, 10), 0.25, seed=0).shape == (2, 10, 10)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.4])
def test_stroke_mask_fraction_and_seed(fraction):
    mask = stroke_mask((96, 80), fraction, seed=0)
    missing = 1 - float(mask.mean())
    assert mask.shape == (96, 80) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert fraction <= missing < fraction + 0.15  # overshoot: at most one stroke
    assert torch.equal(mask, stroke_mask((96, 80), fraction, seed=0))
    assert not torch.equal(mask, stroke_mask((96, 80), fraction, seed=1))
