"""BART .cfl/.hdr I/O (recon.io.cfl): exact round trips, clear errors, and the layout mapping,
checked against the ``bart`` command line when it is installed (Debian package ``bart``)."""

import math
import shutil
import subprocess

import numpy as np
import pytest
import torch

from operators.mri import fft2c
from operators.nufft import NufftPlan, nufft
from recon.errors import InputError
from recon.io.cfl import (
    from_bart_coils,
    from_bart_image,
    kspace_from_bart_noncart,
    kspace_to_bart_noncart,
    read_cfl,
    to_bart_coils,
    to_bart_image,
    trajectory_from_bart,
    trajectory_to_bart,
    write_cfl,
)

pytestmark = pytest.mark.usefixtures("one_thread")
needs_bart = pytest.mark.skipif(shutil.which("bart") is None, reason="the bart command is not installed")


def _random(shape, seed=0):
    """complex64 with random bits' worth of values: extremes of float32 included, no NaN/Inf."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) * 2
    values = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    info = np.finfo(np.float32)
    values[: min(n, 6)] = [info.max, -info.max, info.tiny, -info.tiny, 0.0, -0.0][: min(n, 6)]
    return values.view(np.complex64).reshape(shape)


@pytest.mark.parametrize("shape", [(), (1,), (7,), (4, 3), (5, 1, 3), (2, 1, 1, 4), (3, 2, 1),
                                   (1, 1, 2), (2,) * 16, (1,) * 15 + (2,)])
def test_round_trip_is_bit_exact(tmp_path, shape):
    data = _random(shape)
    write_cfl(tmp_path / "a", data)
    back = read_cfl(tmp_path / "a")
    dims = list(shape) or [1]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    assert back.dtype == np.complex64 and back.shape == tuple(dims)
    assert np.array_equal(back.reshape(-1).view(np.uint32), data.reshape(-1).view(np.uint32))  # bits
    full = read_cfl(tmp_path / "a", squeeze=False)
    assert full.shape == tuple(list(shape) + [1] * (16 - len(shape)))


def test_file_layout_is_fortran_little_endian(tmp_path):
    data = np.arange(6, dtype=np.float64).reshape(2, 3) + 1j * np.arange(6).reshape(2, 3) * 10
    write_cfl(tmp_path / "x.cfl", data)  # the suffix is optional
    assert (tmp_path / "x.hdr").read_text().splitlines()[:2] == ["# Dimensions", "2 3" + " 1" * 14]
    raw = np.fromfile(tmp_path / "x.cfl", dtype="<f4")
    # column-major: data[0, 0], data[1, 0], data[0, 1], ...; real then imaginary
    assert raw.tolist() == [0, 0, 3, 30, 1, 10, 4, 40, 2, 20, 5, 50]
    assert np.array_equal(read_cfl(tmp_path / "x.hdr"), data.astype(np.complex64))


def test_real_and_torch_inputs_become_complex64(tmp_path):
    write_cfl(tmp_path / "r", np.array([[1, 2], [3, 4]], dtype=np.int16))
    assert read_cfl(tmp_path / "r").tolist() == [[1, 2], [3, 4]]
    t = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex128).conj()
    write_cfl(tmp_path / "t", t)
    assert read_cfl(tmp_path / "t").tolist() == [1 - 2j, 3 + 4j]


def test_reader_accepts_short_headers_and_comments(tmp_path):
    (tmp_path / "s.hdr").write_text("# Dimensions\n2 2 1\n# Command\nbart something\n")
    np.array([1, 2, 3, 4], dtype="<c8").tofile(tmp_path / "s.cfl")
    assert read_cfl(tmp_path / "s").tolist() == [[1, 3], [2, 4]]
    assert read_cfl(tmp_path / "s", squeeze=False).shape == (2, 2, 1)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    write_cfl(tmp_path / "a", np.ones(3))
    with pytest.raises(InputError, match=r"a\.hdr: already exists; pass overwrite=True"):
        write_cfl(tmp_path / "a", np.zeros(3))
    (tmp_path / "a.hdr").unlink()
    with pytest.raises(InputError, match=r"a\.cfl: already exists"):
        write_cfl(tmp_path / "a", np.zeros(3))
    write_cfl(tmp_path / "a", np.full(2, 5.0), overwrite=True)
    assert read_cfl(tmp_path / "a").tolist() == [5, 5]


def test_write_errors(tmp_path):
    with pytest.raises(InputError, match=r"b\.cfl: array has 17 dims .*at most 16"):
        write_cfl(tmp_path / "b", np.zeros((1,) * 17))
    with pytest.raises(InputError, match="empty dimension"):
        write_cfl(tmp_path / "b", np.zeros((3, 0)))
    assert not list(tmp_path.iterdir())


def _pair(tmp_path, header, nbytes):
    (tmp_path / "e.hdr").write_text(header)
    (tmp_path / "e.cfl").write_bytes(bytes(nbytes))
    return tmp_path / "e"


@pytest.mark.parametrize("header, nbytes, message", [
    ("# Dims\n2 2\n", 32, r"e\.hdr: is not a BART header: the first line must be '# Dimensions'"),
    ("", 32, r"e\.hdr: is not a BART header"),
    ("# Dimensions\n", 32, r"e\.hdr: has no dimensions"),
    ("# Dimensions\n2 2.5\n", 32, r"e\.hdr: dimension '2\.5' is not an integer"),
    ("# Dimensions\n2 0 1\n", 0, r"e\.hdr: dimension 0 is not positive"),
    ("# Dimensions\n2 -3\n", 0, r"e\.hdr: dimension -3 is not positive"),
    ("# Dimensions\n2 3 1 1\n", 40, (r"e\.cfl: holds 40 bytes but its header's dims \[2, 3, 1, 1\] "
                                     r"need 8 \* 6 = 48 bytes")),
])
def test_bad_files_name_file_and_problem(tmp_path, header, nbytes, message):
    with pytest.raises(InputError, match=message):
        read_cfl(_pair(tmp_path, header, nbytes))


def test_missing_halves(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.hdr: not found"):
        read_cfl(tmp_path / "nothing.cfl")
    (tmp_path / "half.hdr").write_text("# Dimensions\n1\n")
    with pytest.raises(InputError, match=r"half\.cfl: not found"):
        read_cfl(tmp_path / "half")


def test_coil_and_image_layout(tmp_path):
    x = torch.from_numpy(_random((3, 5, 4), seed=1))
    b = to_bart_coils(x)
    assert b.shape == (5, 4, 1, 3) and b[2, 1, 0, 0] == x[0, 2, 1].item() and b[4, 3, 0, 2] == x[2, 4, 3].item()
    write_cfl(tmp_path / "c", b)
    assert torch.equal(from_bart_coils(read_cfl(tmp_path / "c")), x)
    single = to_bart_coils(x[:1])
    write_cfl(tmp_path / "one", single)
    assert read_cfl(tmp_path / "one").shape == (5, 4)  # trailing 1s dropped; still converts back
    assert torch.equal(from_bart_coils(read_cfl(tmp_path / "one")), x[:1])
    with pytest.raises(ValueError, match=r"coils: BART dims \[2, 4\] must have size 1"):
        from_bart_coils(np.zeros((5, 4, 1, 3, 2)))  # two ESPIRiT maps
    image = x[1]
    assert torch.equal(from_bart_image(to_bart_image(image)), image)
    with pytest.raises(ValueError, match="image: BART dims"):
        from_bart_image(np.zeros((5, 4, 2)))


def test_noncartesian_kspace_layout():
    y = torch.from_numpy(_random((2, 3, 5), seed=2))  # (C, spokes, samples)
    b = kspace_to_bart_noncart(y)
    assert b.shape == (1, 5, 3, 2) and b[0, 4, 1, 0] == y[0, 1, 4].item()
    assert torch.equal(kspace_from_bart_noncart(b), y)
    with pytest.raises(ValueError, match=r"BART dims \[0\] must have size 1"):
        kspace_from_bart_noncart(np.zeros((2, 5, 3, 2)))


def test_trajectory_units_and_round_trip():
    shape = (8, 16)
    rad = torch.tensor([[[-math.pi, 0.0], [math.pi / 2, -math.pi / 4], [0.1, math.pi]]])  # 1 spoke
    b = trajectory_to_bart(rad, shape)
    assert b.shape == (3, 3, 1) and b.dtype == np.complex64
    assert np.allclose(b[:, :, 0].T, [[-4, 0, 0], [2, -2, 0], [0.4 / math.pi, 8, 0]])  # 0.1 rad * 8 / (2 pi)
    back = trajectory_from_bart(b, shape)
    assert back.shape == rad.shape and torch.allclose(back, rad, atol=1e-6)


def test_trajectory_out_of_range_names_largest_k():
    b = np.zeros((3, 4, 2), dtype=np.complex64)
    b[1, 2, 1] = 16  # 16 pixels on an 8-wide image: 4 pi
    with pytest.raises(ValueError, match=r"\|k\| reaches 12\.57 rad, outside \[-pi, pi\]"):
        trajectory_from_bart(b, (8, 8))
    with pytest.raises(ValueError, match="reaches 3.2 rad"):
        trajectory_to_bart(torch.full((1, 2, 2), 3.2), (8, 8))
    b[1, 2, 1], b[2, 0, 0] = 1, 1
    with pytest.raises(ValueError, match="coordinate 2"):
        trajectory_from_bart(b, (8, 8))


def _bart(*args):
    subprocess.run(["bart", *map(str, args)], check=True, capture_output=True)


@needs_bart
@pytest.mark.parametrize("shape", [(16, 12), (15, 9)])
def test_bart_unitary_fft_is_recons_fft2c(tmp_path, shape):
    """``bart fft -u 3`` (centred, unitary, BART dims 0 and 1) through the converters equals
    recon's fft2c over (H, W), and ``bart fft -u 1`` is the centred FFT along H alone: the coil
    layout mapping puts recon's rows on BART dim 0 and coils on dim 3."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy((rng.standard_normal((3, *shape)) + 1j * rng.standard_normal((3, *shape)))
                         .astype(np.complex64))
    write_cfl(tmp_path / "img", to_bart_coils(x))
    _bart("fft", "-u", 3, tmp_path / "img", tmp_path / "ksp")
    k = from_bart_coils(read_cfl(tmp_path / "ksp"))
    assert torch.allclose(k, fft2c(x), atol=1e-5)
    _bart("fft", "-u", 1, tmp_path / "img", tmp_path / "rows")  # BART dim 0 only: recon's H axis
    rows = torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(x, dim=1), dim=1, norm="ortho"), dim=1)
    assert torch.allclose(from_bart_coils(read_cfl(tmp_path / "rows")), rows, atol=1e-5)


@needs_bart
def test_bart_radial_trajectory_maps_into_radians(tmp_path):
    _bart("traj", "-x", 64, "-y", 8, "-r", tmp_path / "traj")
    t = read_cfl(tmp_path / "traj")
    assert t.shape == (3, 64, 8) and np.abs(t.imag).max() == 0 and np.abs(t[2]).max() == 0
    assert np.abs(t.real).max() <= 32 and np.abs(t.real).max() > 31
    rad = trajectory_from_bart(t, (64, 64))
    assert rad.shape == (8, 64, 2) and rad.abs().max() <= math.pi
    assert np.allclose(trajectory_to_bart(rad, (64, 64)), t, atol=1e-4)


@needs_bart
def test_bart_nufft_matches_recons_nufft(tmp_path):
    """BART's exact non-uniform DFT (``nufft -s``) on a trajectory stretched differently along
    the two axes equals recon's NUFFT times sqrt(H W) (BART does not normalise): axis order and
    sign conventions of the trajectory mapping agree."""
    shape = (16, 12)
    _bart("traj", "-x", 24, "-y", 5, "-r", tmp_path / "t0")
    t = read_cfl(tmp_path / "t0")
    t[0] *= shape[0] / 24
    t[1] *= 0.7 * shape[1] / 24
    write_cfl(tmp_path / "t", t)
    rng = np.random.default_rng(4)
    image = torch.from_numpy((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64))
    write_cfl(tmp_path / "img", to_bart_image(image))
    _bart("nufft", "-s", tmp_path / "t", tmp_path / "img", tmp_path / "ksp")
    k = kspace_from_bart_noncart(read_cfl(tmp_path / "ksp"))  # (1, spokes, samples)
    traj = trajectory_from_bart(t, shape)
    ref = nufft(image[None], NufftPlan(traj, shape)).reshape(k.shape) * math.sqrt(shape[0] * shape[1])
    assert torch.allclose(k, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
