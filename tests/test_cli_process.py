"""The command line's process-wide step (the CPU allocator) happens in the CLI entry only, never on import
or through ``recon.app.main``; ``RECON_CPU_ALLOCATOR`` opts out."""

import sys

import pytest

import recon.allocator
from recon.app import cli, main


@pytest.fixture
def allocator_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(recon.allocator, "reuse_freed_memory", lambda: calls.append(1) or True)
    return calls


def run_cli(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["recon", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    return exit_info.value.code


def test_main_leaves_the_allocator_alone(allocator_calls, tmp_path, capsys):
    assert main(["run", "samplers=[]", "baselines=[fbp]", "data.size=32", "operator.views=8",
                 f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    assert allocator_calls == [] and (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("setting, calls", [(None, 1), ("reuse", 1), ("system", 0)])
def test_cli_sets_the_allocator_unless_opted_out(allocator_calls, monkeypatch, capsys, setting, calls):
    if setting is None:
        monkeypatch.delenv("RECON_CPU_ALLOCATOR", raising=False)
    else:
        monkeypatch.setenv("RECON_CPU_ALLOCATOR", setting)
    assert run_cli(monkeypatch, "--help") == 0
    assert len(allocator_calls) == calls


def test_cli_names_a_bad_allocator_setting(allocator_calls, monkeypatch, capsys):
    monkeypatch.setenv("RECON_CPU_ALLOCATOR", "jemalloc")
    assert run_cli(monkeypatch, "run") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "RECON_CPU_ALLOCATOR=jemalloc" in lines[0] and allocator_calls == []


@pytest.mark.parametrize("override", ["prior=null", "samplers=true", "task=0", "noise=[]", "~prior=0",
                                      "task.name=${oops}", "seed=abc", "seed=null", "seed=1e400"])
def test_malformed_overrides_are_one_line(override, tmp_path, capsys):
    assert main(["run", override, "samplers=[]", "baselines=[]", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
