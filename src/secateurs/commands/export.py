"""``secateurs export``: write a finished run in a deployable format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 70


def handle(args: argparse.Namespace) -> int:
    from secateurs.io.export import load_exporters
    from secateurs.io.rundir import load_run

    exporter = load_exporters().get(args.format)
    run = load_run(Path(args.run))
    out = Path(args.out) if args.out else run.path.with_name(run.path.name + exporter.suffix)
    summary = exporter.export(run, out)
    print(json.dumps({"format": exporter.name, "out": str(out), **summary}, indent=2))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a finished run (secateurs list formats)")
    parser.add_argument("run", help="a run directory")
    parser.add_argument("--format", required=True, help="an export format")
    parser.add_argument("--out", help="output path (default: next to the run, with the format's suffix)")
    parser.set_defaults(handler=handle)
