"""``secateurs bench``: run a benchmark suite; re-running skips finished cells."""

from __future__ import annotations

import argparse
from pathlib import Path

from secateurs.commands.common import show_progress

ORDER = 50


def handle(args: argparse.Namespace) -> int:
    from secateurs.bench.parallel import ParallelOptions
    from secateurs.bench.runner import run_suite

    parallel = ParallelOptions(jobs=args.jobs, threads=args.threads)
    print(
        run_suite(
            Path(args.suite), Path(args.out), overrides=args.set or [], progress=show_progress(args), parallel=parallel
        )
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="run a benchmark suite (resumable)")
    parser.add_argument("suite", help="a suite YAML file")
    parser.add_argument("--out", required=True, help="the suite's output directory")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a suite key")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells run in N worker processes, each with max(1, cores // N) torch threads (--threads overrides)",
    )
    parser.set_defaults(handler=handle)
