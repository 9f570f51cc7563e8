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
from pathlib import Path

from secateurs.bench.results import ResultRow, read_results
from secateurs.bench.table import aggregate, mean_std, percent_left, pivot_markdown, values_of


def section(path: Path) -> str:
    rows = read_results(path)
    table = aggregate(rows)
    labels = list(dict.fromkeys(row.label for row in rows if not row.dense))
    dense = values_of([row for row in rows if row.dense], lambda row: row.metrics.test_accuracy)
    mean, std = mean_std(dense)
    suite = rows[0].suite
    models = sorted({row.model for row in rows})
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


def realised_levels(rows: list[ResultRow], labels: list[str]) -> dict[float, float]:
    """Nominal level → mean realised share left (over every method and seed at that level)."""
    realised: dict[float, list[float]] = {}
    for row in rows:
        if row.label in labels and row.metrics.sparsity_prunable is not None:
            realised.setdefault(float(row.sparsity), []).append(1 - float(row.metrics.sparsity_prunable))
    return {level: sum(values) / len(values) for level, values in sorted(realised.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.jsonl files of the lap suites")
    args = parser.parse_args()
    print("\n\n".join(section(path) for path in args.results))


if __name__ == "__main__":
    main()
