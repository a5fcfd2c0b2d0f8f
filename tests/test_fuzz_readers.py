"""Property-based fuzzing of every reader and the CLI's overrides (fixed seed): one-line errors, never tracebacks."""

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_strategies as fs

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _case(tmp_path_factory, reader: str, op: str, seed: int) -> None:
    outcome, detail = fs.run_case(reader, op, seed, tmp_path_factory.mktemp(reader))
    assert outcome in {"ok", "clean"}, f"{reader}/{op}/seed {seed}: {detail}"


@pytest.mark.parametrize("reader", ["npy", "nifti", "nifti_gz", "dicom", "fastmri"])
@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_image_and_kspace_readers_fail_in_one_line(tmp_path_factory, reader, data):
    op = data.draw(st.sampled_from(fs.READERS[reader][0]), label="op")
    _case(tmp_path_factory, reader, op, data.draw(st.integers(0, 2**31), label="seed"))


@pytest.mark.parametrize("reader", ["prior", "prior_pt", "shards", "card"])
@settings(FUZZ, max_examples=5)
@given(data=st.data())
def test_prior_readers_fail_in_one_line(tmp_path_factory, reader, data):
    op = data.draw(st.sampled_from(fs.READERS[reader][0]), label="op")
    _case(tmp_path_factory, reader, op, data.draw(st.integers(0, 2**31), label="seed"))


@settings(FUZZ, max_examples=8)
@given(seed=st.integers(0, 2**31))
def test_cli_overrides_exit_2_with_one_line(seed):
    outcome, detail = fs.run_cli_case(seed)
    assert outcome in {"ok", "clean"}, detail


def test_every_mutation_is_reachable_and_classified(tmp_path):
    """Each op of each reader at least writes its input and ends ok or clean (seed 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reader, (ops, _) in fs.READERS.items():
            for number, op in enumerate(ops):
                folder = tmp_path / f"{reader}-{number}"
                folder.mkdir()
                assert fs.run_case(reader, op, 0, folder)[0] in {"ok", "clean"}, (reader, op)


def test_known_bad_inputs_name_the_file(tmp_path):
    """Checks that can fail: a huge declared .npy shape and a NaN weight are clean one-line errors."""
    import random

    outcome, message = fs.run_case("npy", "huge_header", 11, tmp_path)
    assert outcome == "clean" and "image.npy" in message and "bytes" in message
    (tmp_path / "p").mkdir()
    outcome, message = fs.run_case("prior", "tensor_nan", 3, tmp_path / "p")
    assert outcome == "clean" and "NaN or Inf" in message and "tiny.safetensors" in message
    assert fs.mutate_bytes(b"abcdef", "truncate", random.Random(0)) in {b"abcdef"[:n] for n in range(6)}
