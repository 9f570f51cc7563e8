"""The HAP factorial (suites/hap-factorial.yaml): criterion × allocation policy × target, seeds and probe draws.

    PYTHONPATH=src python benchmarks/hap_factorial.py results/hap-factorial.jsonl
    PYTHONPATH=src python benchmarks/hap_factorial.py results/hap-factorial.jsonl --emit-budget-suite suites/X.yaml
    PYTHONPATH=src python benchmarks/hap_factorial.py results/hap-factorial.jsonl \
        --budget results/hap-factorial-finetune.jsonl

The grid measures the cut: test accuracy right after removing the channels, BatchNorm re-estimated,
no fine-tuning (a grid row whose cell was also fine-tuned shows both). Prints, per parameter target:

* **accuracy**: mean ± standard deviation over every replicate of a cell (2 model seeds; × 3
  Hutchinson probe draws for the HAP criteria), one row per criterion, one column per policy;
* **variance decomposition**: the spread of those accuracies split into criterion, allocation,
  their interaction (unweighted two-way decomposition of the cell means) and noise (the mean
  within-cell variance: seeds and probe draws), in accuracy points² and as shares of their sum;
* **agreement with the oracle**: Spearman's rank correlation of each criterion's channel scores
  with the oracle's (the exact loss increase of removing one channel alone, same seed), within
  layers (mean over groups) and pooled over all channels (what a global ranking uses);
* **cost**: the oracle's seconds per channel against the seconds of one HAP probe (one HVP), and the
  suite's cell time.

``--emit-budget-suite`` writes the fine-tuning suite: for every criterion, the policy with the best
mean *validation* accuracy after the cut, at 70 % and 85 % (the test set is not used to choose),
fine-tuned with the short budget (1 epoch over the first 10,000 training images; the first probe
draw only for the HAP criteria). ``--budget`` adds that suite's results to the report.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from secateurs.bench.results import ResultRow, group_by, read_results
from secateurs.bench.table import format_mean_std, markdown_table

CRITERIA = ("hap", "hap-raw", "l2-filter", "taylor", "random-channel", "oracle-channel", "tp-magnitude")
POLICIES = ("global", "layerwise", "normalized")
TARGETS = (0.5, 0.7, 0.85)


def criterion(row: ResultRow) -> str:
    return row.method


def policy(row: ResultRow) -> str:
    scope = (row.config or {}).get("scope")
    return str(scope) if scope else str((row.method_info or {}).get("scope", "?"))


def draw(row: ResultRow) -> int | None:
    value = row.options.get("probe_seed")
    return int(value) if value is not None else None


def after_cut(row: ResultRow) -> float | None:
    return row.metrics_before_finetune.test_accuracy


def after_finetune(row: ResultRow) -> float | None:
    return row.metrics.test_accuracy


def fine_tuned(rows: Iterable[ResultRow]) -> bool:
    """Whether any pruned row was fine-tuned (the grid itself measures the cut: ``train_epochs`` 0)."""
    return any((row.train_epochs or 0.0) > 0 for row in pruned(rows))


def pruned(rows: Iterable[ResultRow]) -> list[ResultRow]:
    return [row for row in rows if not row.dense]


def cells(rows: Iterable[ResultRow]) -> dict[tuple[float, str, str], list[ResultRow]]:
    """Replicates of every (target, criterion, policy) cell."""
    return group_by(pruned(rows), lambda row: (round(row.sparsity, 4), criterion(row), policy(row)))


def points(values: Iterable[float | None]) -> list[float]:
    return [100.0 * value for value in values if value is not None]


# ------------------------------------------------------------------------------------------ accuracy
def accuracy_table(rows: Sequence[ResultRow], target: float) -> str:
    """Criterion rows × policy columns of test accuracy (%) after the cut (→ after fine-tuning, if any)."""
    grouped = cells(rows)
    tuned_too = fine_tuned(rows)
    header = ["criterion (replicates)"] + [f"{p}: cut → fine-tuned %" if tuned_too else f"{p}: cut %" for p in POLICIES]
    body = []
    for name in CRITERIA:
        replicates = {len(grouped.get((target, name, p), [])) for p in POLICIES} - {0}
        if not replicates:
            continue
        line = [f"{name} ({'/'.join(str(n) for n in sorted(replicates))})"]
        for name_policy in POLICIES:
            cell = grouped.get((target, name, name_policy), [])
            cut = format_mean_std(points(after_cut(r) for r in cell), spread="always")
            tuned = format_mean_std(points(after_finetune(r) for r in cell), spread="always")
            line.append(("–" if not cell else f"{cut} → {tuned}") if tuned_too else (cut if cell else "–"))
        body.append(line)
    return markdown_table(header, body)


def variance_components(rows: Sequence[ResultRow], target: float, value: str) -> dict[str, float]:
    """Criterion, allocation, interaction and noise components of ``value`` (``cut`` or ``finetuned``).

    Unweighted two-way decomposition on the full grid of cell means m_ij (criterion i, policy j):
    criterion = var_i(mean_j m_ij), allocation = var_j(mean_i m_ij), interaction = the variance of
    m_ij − row mean − column mean + grand mean, all as population variances over the grid; noise =
    the mean within-cell sample variance of the replicates. Units: accuracy points².
    """
    pick = after_cut if value == "cut" else after_finetune
    grouped = cells(rows)
    names = [c for c in CRITERIA if all((target, c, p) in grouped for p in POLICIES)]
    if not names:
        return {}
    means = {
        (c, p): statistics.fmean(points(pick(r) for r in grouped[(target, c, p)])) for c in names for p in POLICIES
    }
    grand = statistics.fmean(means.values())
    by_criterion = {c: statistics.fmean(means[(c, p)] for p in POLICIES) for c in names}
    by_policy = {p: statistics.fmean(means[(c, p)] for c in names) for p in POLICIES}
    residuals = [means[(c, p)] - by_criterion[c] - by_policy[p] + grand for c in names for p in POLICIES]
    within = [
        statistics.variance(values)
        for c in names
        for p in POLICIES
        if len(values := points(pick(r) for r in grouped[(target, c, p)])) > 1
    ]
    return {
        "criterion": statistics.pvariance(by_criterion.values()),
        "allocation": statistics.pvariance(by_policy.values()),
        "interaction": statistics.fmean(r * r for r in residuals),
        "noise": statistics.fmean(within) if within else 0.0,
    }


def variance_table(rows: Sequence[ResultRow]) -> str:
    header = ["target", "accuracy", "criterion", "allocation", "interaction", "noise (seeds, probes)"]
    body = []
    for target in TARGETS:
        values = (("cut", "after the cut"), ("finetuned", "after fine-tuning"))[: 2 if fine_tuned(rows) else 1]
        for value, label in values:
            parts = variance_components(rows, target, value)
            if not parts:
                continue
            total = sum(parts.values()) or 1.0
            shown = [f"{parts[key]:.2f} ({100 * parts[key] / total:.0f} %)" for key in parts]
            body.append([f"{100 * target:.0f} %", label, *shown])
    return markdown_table(header, body)


# ----------------------------------------------------------------------------------------- rank agreement
def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n with ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's ρ (Pearson correlation of average ranks); None when either side is constant."""
    if len(a) != len(b) or len(a) < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else None


def channel_scores(row: ResultRow) -> dict[str, list[float]]:
    scores = (row.method_info or {}).get("channel_scores") or {}
    return {str(group): [float(v) for v in values] for group, values in scores.items()}


def agreement(rows: Sequence[ResultRow]) -> dict[str, tuple[list[float], list[float]]]:
    """Per criterion: Spearman ρ with the oracle within layers (mean over groups) and pooled, per replicate."""
    oracle = {row.seed: channel_scores(row) for row in pruned(rows) if criterion(row) == "oracle-channel"}
    result: dict[str, tuple[list[float], list[float]]] = {}
    seen: set[tuple[str, int, int | None]] = set()
    for row in pruned(rows):
        name, reference = criterion(row), oracle.get(row.seed)
        replicate = (name, row.seed, draw(row))
        if name == "oracle-channel" or reference is None or replicate in seen:
            continue
        scores = channel_scores(row)
        common = [g for g in scores if g in reference and len(scores[g]) == len(reference[g])]
        if not common:
            continue
        seen.add(replicate)  # the scores do not depend on the policy or the target: one per replicate
        within = [rho for g in common if (rho := spearman(scores[g], reference[g])) is not None]
        pooled = spearman([v for g in common for v in scores[g]], [v for g in common for v in reference[g]])
        entry = result.setdefault(name, ([], []))
        if within:
            entry[0].append(statistics.fmean(within))
        if pooled is not None:
            entry[1].append(pooled)
    return result


def agreement_table(rows: Sequence[ResultRow]) -> str:
    header = ["criterion", "replicates", "Spearman ρ with the oracle, within layers", "pooled over all channels"]
    body = []
    for name, (within, pooled) in sorted(agreement(rows).items(), key=lambda item: CRITERIA.index(item[0])):
        body.append(
            [name, str(len(pooled)), format_mean_std(within, spread="always"), format_mean_std(pooled, spread="always")]
        )
    return markdown_table(header, body)


# ------------------------------------------------------------------------------------------------ cost
def cost_lines(rows: Sequence[ResultRow]) -> list[str]:
    """The oracle's seconds per channel against one HAP probe, and the cells' total time."""
    oracle = [row.method_info for row in pruned(rows) if criterion(row) == "oracle-channel" and row.method_info]
    hap = [row.method_info for row in pruned(rows) if criterion(row) in ("hap", "hap-raw") and row.method_info]
    lines = []
    per_channel = [info["oracle_seconds"] / max(info["forwards"] - 1, 1) for info in oracle if "oracle_seconds" in info]
    per_probe = [info["hvp_seconds"] / info["probes"] for info in hap if info.get("probes")]
    if per_channel and per_probe:
        channel, probe = statistics.fmean(per_channel), statistics.fmean(per_probe)
        lines.append(
            f"oracle: {channel:.3f} s per channel (one forward pass over the calibration set), "
            f"{statistics.fmean(info['forwards'] for info in oracle):.0f} forwards per model; "
            f"HAP: {probe:.2f} s per probe (one HVP); one oracle channel costs {channel / probe:.3f} HAP probes"
        )
    wall = sum(row.timings.wall_s or 0.0 for row in rows)
    lines.append(f"cell time: {wall / 3600:.1f} core-hours over {len(pruned(rows))} cells (dense training excluded)")
    return lines


# ---------------------------------------------------------------------------------- the longer budget
def best_policies(rows: Sequence[ResultRow], targets: Sequence[float] = (0.7, 0.85)) -> dict[float, dict[str, str]]:
    """Per target and criterion, the policy with the best mean validation accuracy after the cut."""
    grouped = cells(rows)
    best: dict[float, dict[str, str]] = {}
    for target in targets:
        for name in CRITERIA:
            scored = [
                (statistics.fmean(values), p)
                for p in POLICIES
                if (
                    values := [
                        r.metrics_before_finetune.val_accuracy
                        for r in grouped.get((target, name, p), [])
                        if r.metrics_before_finetune.val_accuracy is not None
                    ]
                )
            ]
            if scored:
                best.setdefault(target, {})[name] = max(scored)[1]
    return best


def budget_table(short: Sequence[ResultRow], long: Sequence[ResultRow]) -> str:
    """Criterion × target: the chosen policy, accuracy after the cut (the grid) and after fine-tuning."""
    long_cells = cells(long)
    short_cells = cells(short)
    header = ["target", "criterion", "policy", "after the cut %", "fine-tuned %"]
    body = []
    for (target, name, name_policy), replicates in sorted(
        long_cells.items(), key=lambda i: (i[0][0], CRITERIA.index(i[0][1]))
    ):
        tuned = points(after_cut(r) for r in short_cells.get((target, name, name_policy), []))
        longer = points(after_finetune(r) for r in replicates)
        body.append(
            [
                f"{100 * target:.0f} %",
                name,
                name_policy,
                format_mean_std(tuned, spread="always"),
                format_mean_std(longer, spread="always"),
            ]
        )
    return markdown_table(header, body)


def method_options(name: str, probe_seed: int | None) -> str:
    """The options of a criterion's entry, as in suites/hap-factorial.yaml (caches shared, widths pinned)."""
    if name in ("hap", "hap-raw"):
        return f"probe_seed: {probe_seed}, trace_cache: runs/hap-trace-cache, round_to: 1"
    if name == "oracle-channel":
        return "oracle_cache: runs/oracle-cache, round_to: 1"
    return "round_to: null" if name == "tp-magnitude" else "round_to: 1"


def budget_suite(rows: Sequence[ResultRow], source: str) -> str:
    """YAML of the longer-budget suite: the best policy per criterion at 70 % and 85 % (chosen on validation)."""
    lines = [
        "# Generated by benchmarks/hap_factorial.py --emit-budget-suite from " + source + ": for every criterion,",
        "# the allocation policy with the best mean *validation* accuracy after the cut, at 70 % and 85 % of",
        "# parameters, fine-tuned with the short budget (1 epoch over the first 10,000 training images).",
        "# Cut for this 2-core machine: the first probe draw only for the HAP criteria, no 4-epoch budget.",
        "#   secateurs --threads 1 bench suites/hap-factorial-finetune.yaml --jobs 2 --out runs/hap-factorial",
        "# (the same output directory: the dense models and the trace/oracle caches are reused).",
        "name: hap-factorial-finetune",
        "description: the best policy per criterion at 70 % and 85 % of params, fine-tuned 1 epoch over 10k images",
        "data: {name: fashion-mnist, split: tail}",
        "seeds: [0, 1]",
        "models:",
        "  - name: resnet20",
        "    train: {epochs: 8, lr: 0.1, batch_size: 128, weight_decay: 5.0e-4, schedule: cosine, channels_last: true}",
        "methods:",
    ]
    for target, chosen in best_policies(rows).items():
        for name, name_policy in chosen.items():
            for index in (0,) if name in ("hap", "hap-raw") else (None,):
                suffix = f"-p{index}" if index is not None else ""
                entry = f"name: {name}, scope: {name_policy}, label: {name}-{name_policy}{suffix}-{100 * target:.0f}"
                lines.append(f"  - {{{entry}, sparsities: [{target}], options: {{{method_options(name, index)}}}}}")
    lines += [
        "sparsities: [0.7]",
        "finetune: {epochs: 1, lr: 0.01, batch_size: 128, weight_decay: 5.0e-4, schedule: cosine, channels_last: true,"
        " train_subset: 10000}",
        "calibration: {size: 512, batch_size: 256}",
        "measure: {latency: false, bn_recalibrate: true}",
    ]
    return "\n".join(lines) + "\n"


def report(rows: Sequence[ResultRow]) -> str:
    parts = []
    for target in TARGETS:
        parts += [f"**{100 * target:.0f} % of parameters removed**", "", accuracy_table(rows, target), ""]
    parts += ["**Where the spread comes from (accuracy points²)**", "", variance_table(rows), ""]
    parts += ["**Agreement with the oracle**", "", agreement_table(rows), ""]
    parts += ["**Cost**", "", *cost_lines(rows)]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("results/hap-factorial.jsonl"))
    parser.add_argument("--budget", type=Path, help="results of the fine-tuning suite")
    parser.add_argument("--emit-budget-suite", type=Path, help="write the fine-tuning suite here")
    args = parser.parse_args(argv)
    rows = read_results(args.results)
    if args.emit_budget_suite is not None:
        args.emit_budget_suite.write_text(budget_suite(rows, str(args.results)))
        print(f"wrote {args.emit_budget_suite}")
        return 0
    print(report(rows))
    if args.budget is not None:
        print("\n**Fine-tuned: the best policy of each criterion (chosen on validation after the cut)**\n")
        print(budget_table(rows, read_results(args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
