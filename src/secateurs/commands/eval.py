"""``secateurs eval``: reload a finished run and re-measure it on its own preprocessing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secateurs.commands.common import add_allow_changed, summary

ORDER = 30


def handle(args: argparse.Namespace) -> int:
    from secateurs.api import evaluate_run
    from secateurs.runs.directory import read_run

    record = read_run(Path(args.run))
    metrics = evaluate_run(
        Path(args.run), data_dir=args.data_dir, latency=args.latency, allow_changed_model=args.allow_changed_model
    )
    if args.json:
        report = {"run": str(args.run), "recorded": record.metrics.to_json(), "measured": metrics.to_json()}
        print(json.dumps(report, indent=2))
    else:
        print(summary(record, metrics))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("eval", help="re-measure a finished run")
    parser.add_argument("run", help="a run directory")
    parser.add_argument("--json", action="store_true", help="print recorded and measured metrics as JSON")
    parser.add_argument("--latency", action="store_true", help="also measure latency")
    parser.add_argument("--data-dir")
    add_allow_changed(parser)
    parser.set_defaults(handler=handle)
