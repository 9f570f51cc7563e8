"""``secateurs export``: write a finished run in a deployable format (`secateurs.api.export`).

Runs of external models are rebuilt through the reference their run.json records.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secateurs.commands.common import add_allow_changed, key_values

ORDER = 70


def handle(args: argparse.Namespace) -> int:
    from secateurs.api.deploy import export_loaded
    from secateurs.deploy.exporters import load_exporters
    from secateurs.runs.directory import load_run

    exporter = load_exporters().get(args.format)
    settings = key_values(args.set)
    exporter.parse_options(settings)  # bad options fail before the run is loaded
    run = load_run(Path(args.run), allow_changed_model=args.allow_changed_model)
    summary = export_loaded(run, exporter.name, args.out, settings)
    print(json.dumps(summary, indent=2))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a finished run (secateurs list formats)")
    parser.add_argument("run", help="a run directory")
    parser.add_argument("--format", required=True, help="an export format (secateurs list formats)")
    parser.add_argument("--out", help="output path (default: next to the run, with the format's suffix)")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a format option, e.g. density_threshold=0.1 for csr"
    )
    add_allow_changed(parser)
    parser.set_defaults(handler=handle)
