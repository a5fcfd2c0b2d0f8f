"""Command-line entry: ``python -m recon COMMAND [key=value ...]``.

Commands:
    run     simulate a measurement of one image and reconstruct it with every method
    batch   reconstruct every fastMRI file in a folder (data.root=DIR output=DIR), resumable
    train   train a diffusion prior (denoising score matching, EMA, resumable; torchrun for DDP)
    bench   every task x method on held-out cases, appended to benchmarks/RESULTS.md

The command line (``python -m recon``, the ``recon`` script) first sets the CPU memory allocator
to keep freed buffers for reuse (:func:`recon.allocator.reuse_freed_memory`: glibc only, process-wide,
measured 1.36-1.54x faster batched sampling on the CPU); ``RECON_CPU_ALLOCATOR=system`` keeps the C
library's defaults. Calling :func:`main` from Python changes nothing in the process.

Overrides use Hydra's syntax (``operator.views=8``, ``data=file data.path=FILE``,
``hydra.run.dir=DIR``); ``python -m recon run --help`` lists the config groups. User errors
(bad input files, unknown keys) print one line and exit with status 2; ``batch`` exits with 1
when some input files failed (each is reported) and the rest were reconstructed.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from .errors import ConfigError, ReconError

USAGE = __doc__ or ""


def _run(overrides: Sequence[str]) -> int:
    from .config import load_config
    from .run import run

    run(load_config(overrides))
    return 0


def _batch(overrides: Sequence[str]) -> int:
    from .batch import batch
    from .config import load_config

    return batch(load_config(overrides, config_name="batch"))


def _train(overrides: Sequence[str]) -> int:
    from .config import load_config
    from .train_cmd import train

    train(load_config(overrides, config_name="train"))
    return 0


def _bench(overrides: Sequence[str]) -> int:
    from .bench import BENCH_KEYS, bench
    from .config import load_config

    own = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in BENCH_KEYS]
    bench(load_config(own, config_name="bench"), [o for o in overrides if o not in own], " ".join(overrides))
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"run": _run, "batch": _batch, "train": _train,
                                                       "bench": _bench}


def _group_help() -> str:
    from .config import config_root

    root = config_root()
    lines = ["config groups (GROUP=OPTION; baselines and samplers take lists, e.g. samplers=[dds_ct,dps_ct], samplers=[]):"]
    for group in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        options = sorted(f.name.removesuffix(".yaml") for f in group.iterdir() if f.name.endswith(".yaml"))
        if options:
            lines.append(f"  {group.name:<10} {', '.join(options)}")
    return "\n".join(lines)


ALLOCATOR_ENV = "RECON_CPU_ALLOCATOR"


def set_cpu_allocator() -> None:
    """The command line's allocator step: ``$RECON_CPU_ALLOCATOR`` ``reuse`` (default) or ``system``."""
    from .allocator import reuse_freed_memory

    choice = os.environ.get(ALLOCATOR_ENV, "reuse")
    if choice not in {"reuse", "system"}:
        raise ConfigError(f"{ALLOCATOR_ENV}={choice}: expected reuse or system")
    if choice == "reuse":
        reuse_freed_memory()


def cli() -> None:
    """The ``recon`` script and ``python -m recon``: the allocator step, then :func:`main`."""
    try:
        set_cpu_allocator()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``); returns the exit status. No process-wide
    settings change (:func:`cli` adds the allocator step)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE.strip())
        return 0 if args else 2
    from omegaconf.errors import OmegaConfBaseException

    from .config import _first_line

    command, overrides = args[0], args[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        if any(a in {"-h", "--help"} for a in overrides):
            print(USAGE.strip() + "\n\n" + _group_help())
            return 0
        return COMMANDS[command](overrides)
    except ReconError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OmegaConfBaseException as err:  # a config whose shape the command cannot use (noise=[])
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
