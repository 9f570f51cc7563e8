"""The lookahead-pruning tables of docs/lap.md, regenerated from committed bench results.

    PYTHONPATH=src python benchmarks/lap_tables.py results/lap-mlp.jsonl results/lap-conv.jsonl

For each ``results.jsonl`` (written by ``secateurs bench suites/lap-*.yaml``) it prints the dense
accuracy and two Markdown tables, methods × "% of weights left": test accuracy before retraining and
after retraining, as mean ± std over the seeds in the file (sample std; a single seed shows ± 0.00).
Columns are the suites' nominal levels; the realised share of prunable weights is listed under each
table (it differs from the nominal one by rounding only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from secateurs.bench.table import aggregate, mean_std, percent_left, pivot_markdown


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def section(path: Path) -> str:
    rows = read_rows(path)
    table = aggregate(rows)
    labels = list(dict.fromkeys(row["label"] for row in rows if row["label"] != "dense"))
    dense = [row["metrics"]["test_accuracy"] for row in rows if row["label"] == "dense"]
    mean, std = mean_std(dense)
    suite = rows[0]["suite"]
    models = sorted({row["model"] for row in rows})
    lines = [
        f"### {suite} ({', '.join(models)}; {len(dense)} seeds)",
        "",
        f"Dense test accuracy: {100 * mean:.2f} ± {100 * std:.2f} %.",
        "",
        "Test accuracy (%) **before retraining**, columns = % of prunable weights left:",
        "",
        pivot_markdown(table, "test_accuracy_before_finetune", labels=labels),
        "",
        "Test accuracy (%) **after retraining**:",
        "",
        pivot_markdown(table, "test_accuracy", labels=labels),
        "",
        "Realised share of prunable weights left, per column: "
        + ", ".join(
            f"{percent_left(level)} → {100 * realised:.3f} %"
            for level, realised in realised_levels(rows, labels).items()
        )
        + ".",
    ]
    return "\n".join(lines)


def realised_levels(rows: list[dict[str, Any]], labels: list[str]) -> dict[float, float]:
    """Nominal level → mean realised share left (over every method and seed at that level)."""
    realised: dict[float, list[float]] = {}
    for row in rows:
        if row["label"] in labels:
            realised.setdefault(float(row["sparsity"]), []).append(1 - float(row["metrics"]["sparsity_prunable"]))
    return {level: sum(values) / len(values) for level, values in sorted(realised.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.jsonl files of the lap suites")
    args = parser.parse_args()
    print("\n\n".join(section(path) for path in args.results))


if __name__ == "__main__":
    main()
