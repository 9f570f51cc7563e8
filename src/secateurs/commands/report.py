"""``secateurs report``: results.csv, results.md, PNG plots and a self-contained report.html."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 55

LOG_CHOICES = {"auto": None, "on": True, "off": False}


def handle(args: argparse.Namespace) -> int:
    from secateurs.bench.plots import SMALL, PlotStyle
    from secateurs.bench.report import ReportOptions, write_report

    options = ReportOptions(
        out=Path(args.out) if args.out else None,
        run_key=args.run,
        log_remaining=LOG_CHOICES[args.log_remaining],
        style=SMALL if args.small else PlotStyle(),
    )
    report = write_report(Path(args.source), options)
    drawn = [plot.name for plot in report.plots if plot.png is not None]
    skipped = [plot.name for plot in report.plots if plot.png is None]
    print(f"wrote {report.out / 'report.html'}")
    print(f"plots: {', '.join(drawn) or 'none'}" + (f" (skipped, no data: {', '.join(skipped)})" if skipped else ""))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("report", help="tables, plots and an HTML page from a bench directory")
    parser.add_argument("source", help="a bench output directory (with results.jsonl) or a results .jsonl file")
    parser.add_argument("--out", help="output directory (default: the bench directory itself)")
    parser.add_argument("--run", metavar="KEY", help="cell key for the per-layer and per-channel plots")
    parser.add_argument(
        "--log-remaining",
        choices=tuple(LOG_CHOICES),
        default="auto",
        help="accuracy vs weights left on a log axis (auto: when a sparsity exceeds 0.9)",
    )
    parser.add_argument("--small", action="store_true", help="small plots (README thumbnails)")
    parser.set_defaults(handler=handle)
