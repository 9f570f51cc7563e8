"""Do sensitivity-derived per-layer targets beat uniform magnitude pruning at the same overall sparsity?

For each seed: train LeNet-300-100 on Fashion-MNIST, run `secateurs sensitivity --emit-targets
--target-sparsity S` on it, then prune the same dense run three ways to S of the prunable weights and
fine-tune each for the same budget: layer-wise magnitude (every layer at S), global magnitude (one
threshold), and layer-wise magnitude with the emitted ``layer_sparsity.yaml`` (`prune --layer-sparsity`).
Prints test accuracy before and after fine-tuning (mean ± std over seeds) and writes the rows as JSON.

    PYTHONPATH=src python benchmarks/sensitivity_targets.py [--seeds 0 1 2] [--sparsity 0.9] \
        [--out runs/sensitivity-targets] [--json results/sensitivity-targets.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from secateurs.cli import main as cli
from secateurs.runs.directory import read_run

TRAIN = ["--model", "lenet300", "--epochs", "5", "--lr", "0.05", "--batch-size", "128", "--no-latency"]
TRAIN += ["--split", "tail"]  # the validation split results/sensitivity-targets.json was measured on
FINETUNE = ["--finetune-epochs", "1", "--finetune-lr", "0.01", "--no-latency"]
VARIANTS = {
    "uniform (layer-wise magnitude)": ["--method", "magnitude"],
    "global magnitude": ["--method", "magnitude", "--scope", "global"],
    "sensitivity targets": ["--method", "magnitude"],
}


def run(*argv: str) -> None:
    code = cli(["--quiet", *argv])
    if code != 0:
        raise SystemExit(f"secateurs {' '.join(argv)} failed with exit code {code}")


def accuracies(path: Path) -> dict[str, Any]:
    """What the table needs from the pruned run at ``path`` (its run.json, read as a `RunRecord`)."""
    record = read_run(path)
    before = record.metrics_before_finetune
    return {
        "test_accuracy": record.metrics.test_accuracy,
        "test_accuracy_before_finetune": before.test_accuracy if before is not None else None,
        "sparsity_prunable": record.metrics.sparsity_prunable,
        "layers": (record.method_info or {}).get("layers"),
    }


def measure(seeds: list[int], sparsity: float, out: Path) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        dense = out / f"dense-{seed}"
        if not dense.exists():
            run("train", *TRAIN, "--seed", str(seed), "--out", str(dense))
        targets = out / f"sensitivity-{seed}"
        if not targets.exists():
            run("sensitivity", str(dense), "--granularity", "element", "--out", str(targets), "--emit-targets",
                "--target-sparsity", str(sparsity), "--tolerance", "0.01")  # fmt: skip
        for index, (label, flags) in enumerate(VARIANTS.items()):
            pruned = out / f"pruned-{seed}-{index}"
            target = (
                ["--layer-sparsity", str(targets / "layer_sparsity.yaml")] if label == "sensitivity targets" else []
            )
            if not pruned.exists():
                level = [] if target else ["--sparsity", str(sparsity)]
                run("prune", "--from", str(dense), *flags, *level, *target, *FINETUNE, "--seed", str(seed),
                    "--out", str(pruned))  # fmt: skip
            rows.append({"seed": seed, "variant": label, **accuracies(pruned)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pruning | seeds | sparsity (prunable) | test acc. before fine-tuning % | test acc. after 1 epoch % |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in VARIANTS:
        members = [r for r in rows if r["variant"] == label]
        cells = []
        for key in ("test_accuracy_before_finetune", "test_accuracy"):
            values = [100 * r[key] for r in members]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        sparsity = statistics.mean(r["sparsity_prunable"] for r in members)
        lines.append(f"| {label} | {len(members)} | {sparsity:.4f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path("runs/sensitivity-targets"))
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--table", type=Path, help="print the table of an earlier --json file and exit")
    args = parser.parse_args()
    if args.table is not None:
        print(table(json.loads(args.table.read_text())["rows"]))
        return 0
    rows = measure(args.seeds, args.sparsity, args.out)
    if args.json is not None:
        args.json.write_text(json.dumps({"sparsity": args.sparsity, "rows": rows}, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
