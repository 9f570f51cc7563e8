"""The ``secateurs`` command line: parse arguments, call the library, print, set the exit code.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr naming what was wrong and what
is accepted), 1 internal failure, 130 interrupted.

Under ``torchrun`` (``torchrun --nproc_per_node=N -m secateurs train|prune|run ...``) every process joins
the process group here, at the edge (`secateurs.runtime.distributed.init_from_environment`); only rank 0
logs, prints and writes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from secateurs.errors import SecateursError, UsageError

log = logging.getLogger("secateurs")

RUN_LOG = "secateurs.run"
"""`secateurs.runs.directory.RUN_LOG`, the logger of log.txt's sections (named, not imported: no torch here)."""

DISTRIBUTED_COMMANDS = ("train", "prune", "run")
"""Sub-commands that run data-parallel under torchrun; the others refuse to."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors on one line as `UsageError` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command of `secateurs.commands`."""
    from secateurs.commands import command_modules

    parser = _Parser(prog="secateurs", description="Prune neural networks and prove what the pruning bought.")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log lines")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in command_modules():
        module.register(commands)
    return parser


def _attach_logging(args: argparse.Namespace) -> logging.Handler:
    """Show the library's log lines on stderr (INFO by default); returns the handler to detach."""
    logger = logging.getLogger("secateurs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    if not args.verbose:  # the run's narrative (log.txt's sections) stays in log.txt
        handler.addFilter(lambda record: record.name != RUN_LOG or record.levelno >= logging.WARNING)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    return handler


def _stable_allocator() -> None:
    """Re-execute the command with glibc's malloc thresholds raised (see ENVIRONMENT.md).

    glibc reads them only at start-up; with its defaults, batch-256 CPU timings swing by ±30 %.
    Only the console command re-executes itself; `main(argv)` called from Python never does.
    """
    from secateurs.runtime.malloc import ALLOCATOR_ENV, allocator_env_is_set

    if allocator_env_is_set():
        return
    if os.environ.get("SECATEURS_NO_REEXEC"):
        return
    environment = {**os.environ, **ALLOCATOR_ENV}
    os.execve(sys.executable, [sys.executable, "-m", "secateurs", *sys.argv[1:]], environment)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``secateurs`` command; returns the exit code."""
    if argv is None:
        _stable_allocator()
    parser = build_parser()
    args: argparse.Namespace | None = None
    log_handler: logging.Handler | None = None
    try:
        args = parser.parse_args(argv)
        args.command_line = shlex.join(["secateurs", *(sys.argv[1:] if argv is None else argv)])
        log_handler = _attach_logging(args)
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError(f"--threads must be ≥ 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        command: Callable[[argparse.Namespace], int] = args.handler
        return _run_distributed(command, args) if "WORLD_SIZE" in os.environ else command(args)
    except UsageError as error:
        print(f"secateurs: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("secateurs: interrupted", file=sys.stderr)
        return 130
    except SecateursError as error:
        print(f"secateurs: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # an internal failure: one line, the traceback with --verbose
        if args is not None and args.verbose:
            raise
        print(
            f"secateurs: internal error: {type(error).__name__}: {error} (rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if log_handler is not None:
            logging.getLogger("secateurs").removeHandler(log_handler)


def _run_distributed(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``command`` as one rank of a torchrun job: rank 0 logs and prints, the others stay quiet."""
    from secateurs.runtime import distributed

    world = distributed.init_from_environment(os.environ)
    if not world.distributed:
        return command(args)
    if args.command not in DISTRIBUTED_COMMANDS:
        distributed.shutdown(synchronize=False)
        raise UsageError(
            f"'{args.command}' does not run under torchrun; accepted there: {', '.join(DISTRIBUTED_COMMANDS)}"
        )
    succeeded = False
    try:
        if world.is_main:
            code = command(args)
        else:
            logger = logging.getLogger("secateurs")
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    handler.setLevel(logging.ERROR)
            with contextlib.redirect_stdout(io.StringIO()):
                code = command(args)
        succeeded = True
        return code
    finally:
        distributed.shutdown(synchronize=succeeded)


if __name__ == "__main__":
    sys.exit(main())
