"""The README table of the HAP side-by-side, regenerated from ``results/hap-fmnist.jsonl``.

    PYTHONPATH=src python benchmarks/hap_table.py [results/hap-fmnist.jsonl] [--runs runs/hap-fmnist/runs]

One row per method and parameter target, mean ± std over seeds: the parameters actually removed,
parameters and MACs of the pruned model, test accuracy right after pruning (batch-norm statistics
re-estimated) and after the fine-tuning budget, and latency at batch 1 and 256 (as measured inside
the suite, on a shared machine: see benchmarks/hap_speedup.py for interleaved speed-ups). With
``--runs`` (the suite's ``keep_runs`` directories) it also counts implants still exactly zero after
fine-tuning.
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


def zero_implants(runs: Path) -> str:
    """Per kept run with implants: implanted filters whose 1×1 weights are still exactly zero."""
    from secateurs.io.rundir import load_run
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=Path("results/hap-fmnist.jsonl"))
    parser.add_argument("--runs", type=Path, help="the suite's kept run directories")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    print(table(rows))
    if args.runs:
        print()
        print(zero_implants(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
