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
import sys
from pathlib import Path

from secateurs.bench.results import ResultRow, group_by, read_results
from secateurs.bench.table import Value, format_stats, latency_at, markdown_table, mean_std, values_of

COLUMNS: tuple[tuple[str, Value, str], ...] = (
    ("params removed", lambda row: row.info("realised.params_removed"), "percent"),
    ("params", lambda row: row.metrics.params, "count"),
    ("MACs", lambda row: row.metrics.macs, "count"),
    ("acc. pruned+BN %", lambda row: row.metrics_before_finetune.test_accuracy, "percent"),
    ("acc. fine-tuned %", lambda row: row.metrics.test_accuracy, "percent"),
    ("b1 ms", latency_at(1), "ms"),
    ("b256 ms", latency_at(256), "ms"),
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
    """Percent: mean ± std in % (± only with two or more values); ms: two decimals; else a count."""
    if not values:
        return "–"
    mean, std = mean_std(values)
    if kind == "percent":
        return format_stats((100 * mean, 100 * std), spread="always" if len(values) > 1 else "never")
    return f"{mean:.2f}" if kind == "ms" else f"{mean:,.0f}"


def _order(label: str) -> int:
    return ORDER.index(label) if label in ORDER else len(ORDER)


def table(rows: list[ResultRow]) -> str:
    groups = group_by(rows, lambda row: (float(row.sparsity), row.label))
    dense = [r for r in rows if r.dense]
    header = ["target", "method", "seeds", *[c[0] for c in COLUMNS]]
    lines = []
    for sparsity, label in sorted(groups, key=lambda k: (k[0], _order(k[1]), k[1])):
        members = groups[(sparsity, label)]
        cells = []
        for name, value, kind in COLUMNS:
            values = values_of(members, value)
            if label == "dense" and name == "params removed":  # a method_info value: the dense rows have none
                values = [0.0] * len(members)
            cells.append(cell(values, kind))
        target = "–" if label == "dense" else f"{sparsity:g} of params"
        lines.append([target, label, str(len(members)), *cells])
    text = markdown_table(header, lines)
    if dense:
        text += f"\n\nDense {dense[0].model}: {len(dense)} seed(s); targets are fractions of its parameters."
    return text


def budget_table(short: list[ResultRow], long: list[ResultRow]) -> str:
    """Per (target, method) of ``long``: test accuracy after the short and the long fine-tuning.

    Only the seeds both suites ran are compared. The pruned+BN accuracy comes from the same pruning in
    both suites; where the two disagree the cell shows both, since then they did not prune alike.
    """

    def by_cell(rows: list[ResultRow]) -> dict[tuple[float, str, int], ResultRow]:
        return {(float(r.sparsity), r.label, r.seed): r for r in rows if not r.dense}

    def before(row: ResultRow) -> float:
        return float(row.metrics_before_finetune.test_accuracy or 0.0)

    def after(row: ResultRow) -> float:
        return float(row.metrics.test_accuracy or 0.0)

    first, second = by_cell(short), by_cell(long)
    keys = sorted({(sparsity, label) for sparsity, label, _ in second})
    hap = {sparsity: [after(second[k]) for k in second if k[:2] == (sparsity, "hap")] for sparsity, _ in keys}
    header = ["target", "method", "seeds", "acc. pruned+BN %", "fine-tuned, short %", "fine-tuned, long %",
              "gain, points", "long − hap, points"]  # fmt: skip
    lines = []
    for sparsity, label in sorted(keys, key=lambda k: (k[0], _order(k[1]))):
        seeds = sorted(s for (t, m, s) in second if (t, m) == (sparsity, label) and (t, m, s) in first)
        if not seeds:
            continue
        pairs = [(first[(sparsity, label, s)], second[(sparsity, label, s)]) for s in seeds]
        pruned = [cell([before(a) for a, _ in pairs], "percent")]
        if any(before(a) != before(b) for a, b in pairs):
            pruned.append(cell([before(b) for _, b in pairs], "percent"))
        shorter = [after(a) for a, _ in pairs]
        longer = [after(b) for _, b in pairs]
        gain = 100 * (mean_std(longer)[0] - mean_std(shorter)[0])
        versus = 100 * (mean_std(longer)[0] - mean_std(hap[sparsity])[0]) if hap[sparsity] else float("nan")
        lines.append(
            [f"{sparsity:g} of params", label, str(len(seeds)), " / ".join(pruned), cell(shorter, "percent"),
             cell(longer, "percent"), f"{gain:+.2f}", f"{versus:+.2f}"]
        )  # fmt: skip
    return markdown_table(header, lines)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=Path("results/hap-fmnist.jsonl"))
    parser.add_argument("--runs", type=Path, help="the suite's kept run directories")
    parser.add_argument("--budget", type=Path, help="results of the same cells fine-tuned longer")
    args = parser.parse_args()
    rows = read_results(args.results)
    if args.budget is not None:
        print(budget_table(rows, read_results(args.budget)))
        return 0
    print(table(rows))
    if args.runs:
        print()
        print(zero_implants(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
