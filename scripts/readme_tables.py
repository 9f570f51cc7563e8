"""Regenerate the measured tables of README.md and docs/*.md from the committed results files.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; NAME picks a generator
below, which reads ``results/*`` (copied there from a bench run's output directory or written by a
benchmark's ``--out``) through the same functions the benchmark scripts print with. Bench results are
read by the one reader, `secateurs.bench.results.read_results` (rows of every schema version migrate).

    python scripts/readme_tables.py            # rewrite README.md and docs/*.md in place
    python scripts/readme_tables.py --check    # exit 1 if any of them is out of date
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from secateurs.bench.results import ResultRow, read_results
from secateurs.bench.table import aggregate, markdown

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def suite_table(name: str) -> Callable[[], str]:
    def generate() -> str:
        return markdown(aggregate(rows(name)))

    return generate


@functools.cache
def benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` imported as a module (its table functions, not its ``main``)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(name: str) -> list[ResultRow]:
    """The rows of ``results/NAME.jsonl``."""
    return read_results(RESULTS / f"{name}.jsonl")


def infcop(part: str) -> Callable[[], str]:
    def generate() -> str:
        report = benchmark("infcop_report")
        data = rows("infcop-fmnist")
        if part == "mechanism":
            return str(report.mechanism(data))
        table, verdicts = report.tables(data)
        return str(table) if part == "table" else "\n".join(verdicts)

    return generate


GENERATORS: dict[str, Callable[[], str]] = {
    "demo": suite_table("demo"),
    "lap-mlp": lambda: str(benchmark("lap_tables").section(RESULTS / "lap-mlp.jsonl")),
    "lap-conv": lambda: str(benchmark("lap_tables").section(RESULTS / "lap-conv.jsonl")),
    "hap-fmnist": lambda: str(benchmark("hap_table").table(rows("hap-fmnist"))),
    "hap-fmnist-finetune": lambda: str(
        benchmark("hap_table").budget_table(rows("hap-fmnist"), rows("hap-fmnist-finetune"))
    ),
    "hap-fmnist-probes": lambda: str(benchmark("hap_table").table(rows("hap-fmnist-probes"))),
    "hap-trace-noise": lambda: str(
        benchmark("hap_trace_noise").table(json.loads((RESULTS / "hap-trace-noise.json").read_text())["rows"])
    ),
    "hap-factorial": lambda: str(benchmark("hap_factorial").report(rows("hap-factorial"))),
    "hap-factorial-finetune": lambda: str(
        benchmark("hap_factorial").budget_table(rows("hap-factorial"), rows("hap-factorial-finetune"))
    ),
    "hvp-engines": lambda: str(
        benchmark("hvp_engines").table(json.loads((RESULTS / "hvp-engines.json").read_text())["results"])
    ),
    "infcop-table": infcop("table"),
    "infcop-verdict": infcop("verdict"),
    "infcop-mechanism": infcop("mechanism"),
    "campfire-fmnist": lambda: str(benchmark("campfire_table").tables(rows("campfire-fmnist"))),
    "round-to-speed": lambda: str(
        benchmark("round_to").table(json.loads((RESULTS / "round-to-speed.json").read_text()))
    ),
    "round-to-accuracy": lambda: str(benchmark("round_to").accuracy_table(RESULTS / "round-to.jsonl")),
    "sensitivity-targets": lambda: str(
        benchmark("sensitivity_targets").table(json.loads((RESULTS / "sensitivity-targets.json").read_text())["rows"])
    ),
    "csr-speed": lambda: str(benchmark("csr_speed").table(json.loads((RESULTS / "csr-speed.json").read_text()))),
    "masked-step": lambda: str(benchmark("masked_step").table(json.loads((RESULTS / "masked-step.json").read_text()))),
}

BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
INCLUDE = re.compile(r"(<!-- include:(?P<path>docs/[\w.-]+\.md) -->\n)(?P<body>.*?)(<!-- /include -->)", re.DOTALL)
HEADING = re.compile(r"^(#+) ", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\((?![a-z]+:|#|/|docs/)([^)]+)\)")


def render(text: str) -> str:
    """Fill every table block from its generator."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"a table block names {name!r}; known: {', '.join(sorted(GENERATORS))}")
        return f"{match.group(1)}{GENERATORS[name]().rstrip()}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def included(path: str) -> str:
    """``docs/X.md`` as a README section: headings shifted so its first is ``##``, links made relative
    to the repository root. Code blocks are left alone."""
    text = render((ROOT / path).read_text()).rstrip() + "\n"
    first = HEADING.search(text)
    shift = 2 - len(first.group(1)) if first else 0
    pieces, last = [], 0
    for fence in FENCE.finditer(text):
        pieces += [(text[last : fence.start()], True), (fence.group(0), False)]
        last = fence.end()
    pieces.append((text[last:], True))
    out = []
    for piece, prose in pieces:
        if prose:
            piece = HEADING.sub(lambda m: "#" * max(2, len(m.group(1)) + shift) + " ", piece)
            piece = LINK.sub(lambda m: f"](docs/{m.group(1)})", piece)
        out.append(piece)
    return "".join(out)


def render_includes(text: str) -> str:
    return INCLUDE.sub(lambda m: f"{m.group(1)}{included(m.group('path'))}{m.group(4)}", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args()
    stale = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        current = path.read_text()
        if "<!-- table:" not in current and "<!-- include:" not in current:
            continue
        updated = render(current) if path.parent.name == "docs" else render_includes(render(current))
        if updated == current:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(updated)
    if args.check and stale:
        names = ", ".join(map(str, stale))
        print(f"tables out of date in {names}: run python scripts/readme_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
