"""Regenerate the README's plots from the committed results: ``make report``.

For every ``results/NAME.jsonl`` (with ``NAME.suite.json`` / ``NAME.environment.json`` beside it when
present) the full report (report.html, results.csv, results.md, plots) is written to
``runs/reports/NAME/`` (not committed), and the headline plots are copied, small, to
``docs/img/NAME-PLOT.png`` (committed; the README embeds them).

    python scripts/report_images.py              # all results/*.jsonl
    python scripts/report_images.py lap-mlp      # only results/lap-mlp.jsonl
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from secateurs.bench.plots import SMALL
from secateurs.bench.report import PLOT_NAMES, ReportOptions, write_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
IMAGES = ROOT / "docs" / "img"
REPORTS = ROOT / "runs" / "reports"
HEADLINE = ("accuracy-vs-sparsity", "accuracy-vs-macs", "accuracy-vs-epochs", "channel-sensitivity")
"""The plots worth a README thumbnail; the others stay in the full report."""


def render(results: Path) -> list[Path]:
    """Write the report of ``results`` and copy its headline plots to docs/img; returns the copies."""
    name = results.stem
    report = write_report(results, ReportOptions(out=REPORTS / name, style=SMALL))
    IMAGES.mkdir(parents=True, exist_ok=True)
    copied = []
    for plot in report.plots:
        target = IMAGES / f"{name}-{plot.name}.png"
        if plot.name in HEADLINE and plot.png is not None:
            shutil.copyfile(REPORTS / name / "plots" / f"{plot.name}.png", target)
            copied.append(target)
        else:
            target.unlink(missing_ok=True)
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="results/NAME.jsonl to render (default: all)")
    args = parser.parse_args()
    files = [RESULTS / f"{name}.jsonl" for name in args.names] or sorted(RESULTS.glob("*.jsonl"))
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        print(f"no such results file: {', '.join(missing)}", file=sys.stderr)
        return 2
    for results in files:
        copied = render(results)
        shown = ", ".join(path.relative_to(ROOT).as_posix() for path in copied) or "no headline plot"
        print(f"{results.relative_to(ROOT)}: {shown} (full report: runs/reports/{results.stem}/report.html)")
    assert set(HEADLINE) <= set(PLOT_NAMES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
