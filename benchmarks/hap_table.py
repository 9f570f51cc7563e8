"""The README table of the HAP side-by-side, regenerated from ``results/hap-fmnist.jsonl``.

    PYTHONPATH=src python benchmarks/hap_table.py [results/hap-fmnist.jsonl] [--runs runs/hap-fmnist/runs]
    PYTHONPATH=src python benchmarks/hap_table.py --budget results/hap-fmnist-finetune.jsonl

One row per method and parameter target, mean ± std over seeds: the parameters actually removed,
parameters and MACs of the pruned model, test accuracy right after pruning (batch-norm statistics
re-estimated) and after the fine-tuning budget, and latency at batch 1 and 256 (as measured inside
the suite, on a shared machine: see benchmarks/hap_speedup.py for interleaved speed-ups). With
``--runs`` (the suite's ``keep_runs`` directories) it also counts implants still exactly zero after
fine-tuning. With ``--budget`` (the results of suites/hap-fmnist-finetune.yaml: the same pruned models,
fine-tuned longer) it prints, per method, the accuracy after the short and after the long fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from secateurs.bench.table import lookup, mean_std

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("params removed", "method_info.realised.params_removed", "percent"),
    ("params", "metrics.params", "count"),
    ("MACs", "metrics.macs", "count"),
    ("acc. pruned+BN %", "before_finetune.test_accuracy", "percent"),
    ("acc. fine-tuned %", "metrics.test_accuracy", "percent"),
    ("b1 ms", "metrics.latency_ms.batch_1", "ms"),
    ("b256 ms", "metrics.latency_ms.batch_256", "ms"),
)
ORDER = (
    "dense",
    "hap",
    "hap-implant0.1",
    "hap-implant0.3",
    "hap-implant0.1-centre",
    "l2-filter",
    "taylor",
    "random-channel",
    "tp-magnitude",
    "tp-taylor",
    "tp-hessian",
    "tp-hessian-fixed",
)


def cell(values: list[float], kind: str) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    if kind == "percent":
        return f"{100 * mean:.2f} ± {100 * std:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"
    if kind == "ms":
        return f"{mean:.2f}"
    return f"{mean:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((float(row["sparsity"]), row["label"]), []).append(row)
    dense = [r for r in rows if r["label"] == "dense"]
    header = ["target", "method", "seeds", *[c[0] for c in COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = sorted(groups, key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else len(ORDER), k[1]))
    for sparsity, label in keys:
        members = groups[(sparsity, label)]
        cells = []
        for _, path, kind in COLUMNS:
            values = [float(v) for v in (lookup(m, path) for m in members) if isinstance(v, int | float)]
            if label == "dense" and path.startswith("method_info"):
                values = [0.0] * len(members)
            cells.append(cell(values, kind))
        target = "–" if label == "dense" else f"{sparsity:g} of params"
        lines.append("| " + " | ".join([target, label, str(len(members)), *cells]) + " |")
    if dense:
        lines.append("")
        lines.append(f"Dense {dense[0]['model']}: {len(dense)} seed(s); targets are fractions of its parameters.")
    return "\n".join(lines)


def budget_table(short: list[dict[str, Any]], long: list[dict[str, Any]]) -> str:
    """Per (target, method) of ``long``: test accuracy after the short and the long fine-tuning.

    Only the seeds both suites ran are compared. The pruned+BN accuracy comes from the same pruning in
    both suites; where the two disagree the cell shows both, since then they did not prune alike.
    """

    def by_cell(rows: list[dict[str, Any]]) -> dict[tuple[float, str, int], dict[str, Any]]:
        return {(float(r["sparsity"]), r["label"], int(r["seed"])): r for r in rows if r["label"] != "dense"}

    first, second = by_cell(short), by_cell(long)
    keys = sorted({(sparsity, label) for sparsity, label, _ in second})
    hap = {
        sparsity: [float(second[k]["metrics"]["test_accuracy"]) for k in second if k[:2] == (sparsity, "hap")]
        for sparsity, _ in keys
    }
    header = ["target", "method", "seeds", "acc. pruned+BN %", "fine-tuned, short %", "fine-tuned, long %",
              "gain, points", "long − hap, points"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for sparsity, label in sorted(keys, key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else len(ORDER))):
        seeds = sorted(s for (t, m, s) in second if (t, m) == (sparsity, label) and (t, m, s) in first)
        if not seeds:
            continue
        pairs = [(first[(sparsity, label, s)], second[(sparsity, label, s)]) for s in seeds]
        before = [cell([float(a["before_finetune"]["test_accuracy"]) for a, _ in pairs], "percent")]
        if any(a["before_finetune"]["test_accuracy"] != b["before_finetune"]["test_accuracy"] for a, b in pairs):
            before.append(cell([float(b["before_finetune"]["test_accuracy"]) for _, b in pairs], "percent"))
        shorter = [float(a["metrics"]["test_accuracy"]) for a, _ in pairs]
        longer = [float(b["metrics"]["test_accuracy"]) for _, b in pairs]
        gain = 100 * (mean_std(longer)[0] - mean_std(shorter)[0])
        versus = 100 * (mean_std(longer)[0] - mean_std(hap[sparsity])[0]) if hap[sparsity] else float("nan")
        lines.append(
            f"| {sparsity:g} of params | {label} | {len(seeds)} | {' / '.join(before)} | {cell(shorter, 'percent')} "
            f"| {cell(longer, 'percent')} | {gain:+.2f} | {versus:+.2f} |"
        )
    return "\n".join(lines)


def zero_implants(runs: Path) -> str:
    """Per kept run with implants: implanted filters whose 1×1 weights are still exactly zero."""
    from secateurs.runs.directory import load_run
    from secateurs.structure.implant import ImplantedConv2d

    lines = []
    for path in sorted(p for p in runs.iterdir() if p.is_dir() and "implant" in p.name):
        model = load_run(path).model
        total = dead = 0
        for module in model.modules():
            if isinstance(module, ImplantedConv2d):
                weights = module.implant.weight.detach().reshape(module.implant.out_channels, -1)
                total += weights.shape[0]
                dead += int((weights.abs().sum(1) == 0).sum())
        lines.append(f"{path.name}: {dead} of {total} implanted filters still zero after fine-tuning")
    return "\n".join(lines)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=Path("results/hap-fmnist.jsonl"))
    parser.add_argument("--runs", type=Path, help="the suite's kept run directories")
    parser.add_argument("--budget", type=Path, help="results of the same cells fine-tuned longer")
    args = parser.parse_args()
    rows = read_rows(args.results)
    if args.budget is not None:
        print(budget_table(rows, read_rows(args.budget)))
        return 0
    print(table(rows))
    if args.runs:
        print()
        print(zero_implants(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
