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
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from secateurs.bench.table import lookup, mean_std

E_CF_1 = ("element", "window", "kernel", "window+kernel", "filter", "1:3")
SWEEP = {"element": ("element", "element-sweep"), "window": ("window", "window-sweep")}
DURATION = (
    ("window-end3", "pruning epochs 1 → 3, LR drop at 8"),
    ("window", "pruning epochs 1 → 6, LR drop at 8 (default)"),
    ("window-end9", "pruning epochs 1 → 9, LR drop at 8 (drop before the end)"),
    ("window-lrdrop4", "pruning epochs 1 → 6, LR drop at 4 (drop before the end)"),
)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stat(rows: Sequence[dict[str, Any]], path: str, scale: float = 1.0) -> tuple[float, float] | None:
    values = [float(v) * scale for v in (lookup(r, path) for r in rows) if isinstance(v, int | float)]
    return mean_std(values) if values else None


def robustness(rows: Sequence[dict[str, Any]], attack: str, epsilon: str) -> tuple[float, float] | None:
    """Mean accuracy (%) under ``attack`` at ``epsilon`` (keys like "0.05" hold dots: no dotted lookup)."""
    values = []
    for row in rows:
        table = lookup(row, f"metrics.robustness.{attack}")
        if isinstance(table, dict) and isinstance(table.get(epsilon), int | float):
            values.append(100 * float(table[epsilon]))
    return mean_std(values) if values else None


def show(value: tuple[float, float] | None, digits: int = 2, spread: bool = True) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if spread and std else f"{mean:.{digits}f}"


def storage(row: dict[str, Any]) -> dict[str, float] | None:
    info = lookup(row, "method_info.storage")
    return info if isinstance(info, dict) else None


def line(
    name: str,
    rows: Sequence[dict[str, Any]],
    dense: Sequence[dict[str, Any]],
    epsilons: Sequence[str],
    dense_bytes: int | None = None,
) -> str:
    seeds = sorted({r["seed"] for r in rows})
    accuracy = stat(rows, "metrics.test_accuracy", 100)
    reference = stat([d for d in dense if d["seed"] in seeds], "metrics.test_accuracy", 100)
    delta = None if accuracy is None or reference is None else (accuracy[0] - reference[0], 0.0)
    pruned = stat(rows, "method_info.sparsity_pruned_layers", 100)
    overall = stat(rows, "metrics.sparsity_prunable", 100)
    clean = [show(stat(rows, "metrics.robustness.clean", 100), 1, False)] if epsilons else []
    attacks = [show(robustness(rows, a, e), 1, False) for e in epsilons for a in ("fgsm", "pgd")]
    packed = [storage(r) for r in rows]
    if all(p is not None for p in packed) and packed:
        kib = f"{packed[0]['packed_bytes'] / 1024:.1f}"  # type: ignore[index]
        ratios = f"{packed[0]['packed_vs_dense']:.3f} / {packed[0]['packed_vs_csr']:.3f}"  # type: ignore[index]
    else:
        kib, ratios = (f"{dense_bytes / 1024:.1f}" if dense_bytes else "–"), "1 / –"
    target = f"{100 * float(rows[0]['sparsity']):.1f}" if rows[0]["sparsity"] else "0"
    cells = [name, target, show(pruned, 1, False), show(overall, 1, False), str(len(seeds)), show(accuracy)]
    cells += ["–" if delta is None else f"{delta[0]:+.2f}", *clean, *attacks, kib, ratios]
    return "| " + " | ".join(cells) + " |"


def header(epsilons: Sequence[str], first: str = "granularity") -> str:
    columns = [first, "target %", "realised % (pruned layers)", "realised % (all conv/linear)", "seeds"]
    columns += ["test acc %", "Δ vs dense"]
    columns += ["clean (attacked set)"] if epsilons else []
    columns += [f"{a.upper()} ε={e}" for e in epsilons for a in ("fgsm", "pgd")]
    columns += ["packed KiB", "vs dense / vs CSR"]
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def epsilons_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    for row in rows:
        fgsm = lookup(row, "metrics.robustness.fgsm")
        if isinstance(fgsm, dict):
            return list(fgsm)
    return []


def tables(rows: list[dict[str, Any]]) -> str:
    dense = [r for r in rows if r["label"] == "dense"]
    epsilons = epsilons_of(rows)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    out = ["### Granularities at a 66.7 % target (E-CF-1)", "", header(epsilons)]
    stored = [storage(r) for r in rows if storage(r) is not None]
    dense_bytes = int(stored[0]["dense_bytes"]) if stored else None  # type: ignore[index]
    out.append(line("dense", dense, dense, epsilons, dense_bytes))
    for label in E_CF_1:
        if label in by_label:
            out.append(line(label, by_label[label], dense, epsilons))
    out += ["", "### Sparsity sweep (E-CF-3)", "", header(epsilons)]
    for name, labels in SWEEP.items():
        members = [r for label in labels for r in by_label.get(label, [])]
        for sparsity in sorted({float(r["sparsity"]) for r in members}):
            out.append(line(name, [r for r in members if float(r["sparsity"]) == sparsity], dense, epsilons))
    out += ["", "### Pruning duration and LR drop, window at 66.7 % (E-CF-2)", "", header(epsilons, "variant")]
    for label, description in DURATION:
        if label in by_label:
            seed0 = [r for r in by_label[label] if r["seed"] == 0]
            out.append(line(f"{description}", seed0, dense, epsilons))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results.jsonl (e.g. results/campfire-fmnist.jsonl)")
    args = parser.parse_args(argv)
    print(tables(read_rows(args.results)))


if __name__ == "__main__":
    main()
