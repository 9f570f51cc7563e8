"""Regenerate the Campfire tables of docs/campfire.md from a suite's results.jsonl.

    python benchmarks/campfire_table.py results/campfire-fmnist.jsonl

Three tables: every granularity at 66.7 % (E-CF-1), the sparsity sweep (E-CF-3) and the pruning
duration / LR-drop variants (E-CF-2). Accuracies are test accuracy in %, mean ± sample std over the
seeds present; Δ is against the dense model of the same seeds; sparsity is the *realised* fraction
removed over the pruned layers (first conv and classifier are dense) and over all conv/linear weights;
robustness is accuracy under FGSM / PGD-5 at ε (pixel units) on the first test images (the suite's
``examples``), next to the clean accuracy on the same images; bytes
are the packed export's payload against dense float32 and CSR (int32 indices).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

from secateurs.bench.results import ResultRow, group_by, read_results
from secateurs.bench.table import Value, format_stats, markdown_table, stats, values_of
from secateurs.runs.record import Robustness

E_CF_1 = ("element", "window", "kernel", "window+kernel", "filter", "1:3")
SWEEP = {"element": ("element", "element-sweep"), "window": ("window", "window-sweep")}
DURATION = (
    ("window-end3", "pruning epochs 1 → 3, LR drop at 8"),
    ("window", "pruning epochs 1 → 6, LR drop at 8 (default)"),
    ("window-end9", "pruning epochs 1 → 9, LR drop at 8 (drop before the end)"),
    ("window-lrdrop4", "pruning epochs 1 → 6, LR drop at 4 (drop before the end)"),
)


def stat(rows: Sequence[ResultRow], value: Value, scale: float = 1.0) -> tuple[float, float] | None:
    return stats(values_of(rows, value, scale))


def robustness(rows: Sequence[ResultRow], attack: str, epsilon: str) -> tuple[float, float] | None:
    """Mean accuracy (%) under ``attack`` at ``epsilon`` (a key like "0.05")."""

    def under(row: ResultRow) -> float | None:
        robust = row.metrics.robustness
        return robust.under(attack, epsilon) if robust is not None else None

    return stat(rows, under, 100)


def clean(row: ResultRow) -> float | None:
    return row.metrics.robustness.clean if row.metrics.robustness is not None else None


def show(value: tuple[float, float] | None, digits: int = 2, spread: bool = True) -> str:
    return format_stats(value, digits, "nonzero" if spread else "never")


def storage(row: ResultRow) -> dict[str, float] | None:
    info = row.info("storage")
    return info if isinstance(info, dict) else None


def line(
    name: str,
    rows: Sequence[ResultRow],
    dense: Sequence[ResultRow],
    epsilons: Sequence[str],
    dense_bytes: int | None = None,
) -> list[str]:
    seeds = sorted({r.seed for r in rows})
    accuracy = stat(rows, lambda r: r.metrics.test_accuracy, 100)
    reference = stat([d for d in dense if d.seed in seeds], lambda r: r.metrics.test_accuracy, 100)
    delta = None if accuracy is None or reference is None else (accuracy[0] - reference[0], 0.0)
    pruned = stat(rows, lambda r: r.info("sparsity_pruned_layers"), 100)
    overall = stat(rows, lambda r: r.metrics.sparsity_prunable, 100)
    cleans = [show(stat(rows, clean, 100), 1, False)] if epsilons else []
    attacks = [show(robustness(rows, a, e), 1, False) for e in epsilons for a in ("fgsm", "pgd")]
    packed = [storage(r) for r in rows]
    first = packed[0] if packed else None
    if first is not None and all(p is not None for p in packed):
        kib = f"{first['packed_bytes'] / 1024:.1f}"
        ratios = f"{first['packed_vs_dense']:.3f} / {first['packed_vs_csr']:.3f}"
    else:
        kib, ratios = (f"{dense_bytes / 1024:.1f}" if dense_bytes else "–"), "1 / –"
    target = f"{100 * float(rows[0].sparsity):.1f}" if rows[0].sparsity else "0"
    cells = [name, target, show(pruned, 1, False), show(overall, 1, False), str(len(seeds)), show(accuracy)]
    return [*cells, "–" if delta is None else f"{delta[0]:+.2f}", *cleans, *attacks, kib, ratios]


def header(epsilons: Sequence[str], first: str = "granularity") -> list[str]:
    columns = [first, "target %", "realised % (pruned layers)", "realised % (all conv/linear)", "seeds"]
    columns += ["test acc %", "Δ vs dense"]
    columns += ["clean (attacked set)"] if epsilons else []
    columns += [f"{a.upper()} ε={e}" for e in epsilons for a in ("fgsm", "pgd")]
    return [*columns, "packed KiB", "vs dense / vs CSR"]


def epsilons_of(rows: Iterable[ResultRow]) -> list[str]:
    for row in rows:
        robust: Robustness | None = row.metrics.robustness
        if robust is not None and robust.fgsm is not None:
            return list(robust.fgsm)
    return []


def tables(rows: list[ResultRow]) -> str:
    dense = [r for r in rows if r.dense]
    epsilons = epsilons_of(rows)
    by_label = group_by(rows, lambda row: row.label)
    stored = [found for found in (storage(r) for r in rows) if found is not None]
    dense_bytes = int(stored[0]["dense_bytes"]) if stored else None
    granularities = [line("dense", dense, dense, epsilons, dense_bytes)]
    granularities += [line(label, by_label[label], dense, epsilons) for label in E_CF_1 if label in by_label]
    sweep = []
    for name, labels in SWEEP.items():
        members = [r for label in labels for r in by_label.get(label, [])]
        for sparsity in sorted({float(r.sparsity) for r in members}):
            sweep.append(line(name, [r for r in members if float(r.sparsity) == sparsity], dense, epsilons))
    duration = [
        line(description, [r for r in by_label[label] if r.seed == 0], dense, epsilons)
        for label, description in DURATION
        if label in by_label
    ]
    return "\n".join(
        [
            "### Granularities at a 66.7 % target (E-CF-1)",
            "",
            markdown_table(header(epsilons), granularities),
            "",
            "### Sparsity sweep (E-CF-3)",
            "",
            markdown_table(header(epsilons), sweep),
            "",
            "### Pruning duration and LR drop, window at 66.7 % (E-CF-2)",
            "",
            markdown_table(header(epsilons, "variant"), duration),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results.jsonl (e.g. results/campfire-fmnist.jsonl)")
    args = parser.parse_args(argv)
    print(tables(read_results(args.results)))


if __name__ == "__main__":
    main()
