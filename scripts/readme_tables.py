"""Regenerate the README's measured tables from the committed results files.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->`` in README.md; NAME picks a
generator below, which reads ``results/*.jsonl`` (copied there from a bench run's output directory).

    python scripts/readme_tables.py            # rewrite README.md in place
    python scripts/readme_tables.py --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from secateurs.bench.results import ResultsFile
from secateurs.bench.table import aggregate, markdown

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def suite_table(name: str) -> Callable[[], str]:
    def generate() -> str:
        return markdown(aggregate(ResultsFile(RESULTS / f"{name}.jsonl").read()))

    return generate


GENERATORS: dict[str, Callable[[], str]] = {
    "demo": suite_table("demo"),
}

BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)


def render(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"README.md names table {name!r}; known: {', '.join(sorted(GENERATORS))}")
        return f"{match.group(1)}{GENERATORS[name]().rstrip()}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    current = readme.read_text()
    updated = render(current)
    if args.check:
        if updated != current:
            print("README.md tables are out of date: run python scripts/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
