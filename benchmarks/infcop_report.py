"""Tables, curve CSV, verdict and mechanism summary of the InfCoP benchmark (suites/infcop-fmnist.yaml).

Usage (regenerates everything docs/infcop.md reports from the committed results)::

    PYTHONPATH=src python benchmarks/infcop_report.py results/infcop-fmnist.jsonl \
        --csv results/infcop-fmnist-curve.csv --plot docs/infcop-curves.png

Prints Markdown: per model × pruning rule, every method's final sparsity, test accuracy, difference
to IMP, cumulative training epochs, flow-check seconds and cost in epoch-equivalents; one verdict line
per model × rule (did an InfCoP setting reach IMP's accuracy within 0.3 points, with how many of its
epochs); and the E-INF-2 summary of the flow distances IMP's monitor logged during full retraining.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from secateurs.bench.results import ResultRow, group_by, read_results
from secateurs.bench.table import markdown_table, mean_std

TOLERANCE_POINTS = 0.3
TARGET_RATIO = 0.5


def rule_of(row: ResultRow) -> str:
    return str(row.options.get("rule", "lth"))


def is_baseline(row: ResultRow) -> bool:
    """IMP with the whole budget in every round (not the flow-free short-round control)."""
    return row.method == "imp" and row.options.get("early_round_epochs") is None


def settings(row: ResultRow) -> str:
    """ε and its kind for InfCoP rows (``0.1 rel``, ``0.005 abs``, ``+acc``); the control's short rounds."""
    options = row.options
    if row.method == "imp":
        early = options.get("early_round_epochs")
        return "–" if early is None else f"{early:g} ep. until the last round"
    text = f"{options.get('epsilon', 0.05):g} {'rel' if options.get('relative') else 'abs'}"
    return text + (" +acc" if options.get("stop_on_accuracy", True) else "")


def groups(rows: Iterable[ResultRow]) -> dict[tuple[str, str], dict[str, list[ResultRow]]]:
    """model, rule → label → rows over seeds (dense rows left out)."""
    pruned = [row for row in rows if row.method != "dense"]
    return {
        key: group_by(members, lambda row: row.label)
        for key, members in group_by(pruned, lambda row: (row.model, rule_of(row))).items()
    }


def stat(rows: Sequence[ResultRow], value: Callable[[ResultRow], Any]) -> tuple[float, float]:
    return mean_std([float(value(row)) for row in rows])


def summary(rows: Sequence[ResultRow]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for row in rows:
        for record in row.rounds:
            reasons[record["stop_reason"]] = reasons.get(record["stop_reason"], 0) + 1
    return {
        "settings": settings(rows[0]),
        "method": rows[0].method,
        "seeds": len(rows),
        "sparsity": stat(rows, lambda r: r.metrics.sparsity_prunable),
        "test": stat(rows, lambda r: 100 * (r.metrics.test_accuracy or 0.0)),
        "epochs": stat(rows, lambda r: r.train_epochs),
        "flow_seconds": stat(rows, lambda r: r.info("flow_check_seconds")),
        "cost": stat(rows, lambda r: r.info("cost_epoch_equivalents")),
        "reasons": reasons,
    }


def baseline_label(labels: dict[str, list[ResultRow]]) -> str | None:
    return next((label for label, rows in labels.items() if is_baseline(rows[0])), None)


HEADER = (
    "model", "rule", "method", "ε", "seeds", "sparsity", "test acc %", "Δ vs IMP", "epochs", "epochs / IMP",
    "flow-check s", "cost (epoch-eq.)", "rounds stopped by flow / accuracy / budget",
)  # fmt: skip


def tables(rows: list[ResultRow]) -> tuple[str, list[str]]:
    """The Markdown table and one verdict line per model × rule."""
    lines = []
    verdicts = []
    for (model, rule), labels in sorted(groups(rows).items()):
        base = baseline_label(labels)
        reference = summary(labels[base]) if base else None
        matching, controls = [], []
        order = sorted(labels.items(), key=lambda item: (not is_baseline(item[1][0]), item[1][0].method, item[0]))
        for label, members in order:
            entry = summary(members)
            delta = entry["test"][0] - reference["test"][0] if reference else math.nan
            ratio = entry["epochs"][0] / reference["epochs"][0] if reference else math.nan
            reasons = entry["reasons"]
            lines.append(
                [model, rule, label, entry["settings"], str(entry["seeds"]), f"{entry['sparsity'][0]:.4f}",
                 f"{entry['test'][0]:.2f} ± {entry['test'][1]:.2f}", f"{delta:+.2f}", f"{entry['epochs'][0]:.2f}",
                 f"{ratio:.2f}", f"{entry['flow_seconds'][0]:.2f}", f"{entry['cost'][0]:.2f}",
                 f"{reasons.get('flow', 0)} / {reasons.get('accuracy', 0)} / {reasons.get('budget', 0)}"]
            )  # fmt: skip
            if entry["method"] != "imp" and delta >= -TOLERANCE_POINTS:
                matching.append((ratio, label, delta, entry))
            if entry["method"] == "imp" and not is_baseline(members[0]):
                controls.append((label, delta, ratio, entry))
        verdicts.append(verdict(model, rule, reference, sorted(matching), controls))
    return markdown_table(HEADER, lines), verdicts


def verdict(
    model: str,
    rule: str,
    reference: dict[str, Any] | None,
    matching: list[tuple[Any, ...]],
    controls: list[tuple[Any, ...]],
) -> str:
    if reference is None:
        return f"- {model} / {rule}: no IMP baseline in the results."
    head = (
        f"- {model} / {rule}: IMP {reference['test'][0]:.2f} % after {reference['epochs'][0]:.1f} epochs "
        f"(sparsity {reference['sparsity'][0]:.4f})."
    )
    for label, delta, ratio, entry in controls:
        head += (
            f" Flow-free control {label}: {entry['test'][0]:.2f} % ({delta:+.2f}) after {entry['epochs'][0]:.1f} "
            f"epochs = {ratio:.2f} of IMP's (sparsity {entry['sparsity'][0]:.4f})."
        )
    if not matching:
        return head + f" No InfCoP setting came within {TOLERANCE_POINTS} points."
    ratio, label, delta, entry = matching[0]
    met = "meets" if ratio <= TARGET_RATIO else "misses"
    return head + (
        f" Cheapest InfCoP setting within {TOLERANCE_POINTS} points: {label} ({entry['settings']}), "
        f"{entry['test'][0]:.2f} % ({delta:+.2f}) after {entry['epochs'][0]:.1f} epochs = {ratio:.2f} of IMP's "
        f"(+{entry['flow_seconds'][0]:.1f} s of flow checks, {entry['cost'][0]:.1f} epoch-equivalents in all; "
        f"sparsity {entry['sparsity'][0]:.4f}); {met} the ≤ {TARGET_RATIO:g}× target. "
        f"{len(matching)} InfCoP setting(s) were within {TOLERANCE_POINTS} points."
    )


# ------------------------------------------------------------------------------------- E-INF-2
def pearson(first: Sequence[float], second: Sequence[float]) -> float:
    if len(first) < 3 or statistics.pstdev(first) == 0 or statistics.pstdev(second) == 0:
        return math.nan
    return statistics.correlation(first, second)


def mechanism(rows: list[ResultRow]) -> str:
    """How IMP's monitored flow distance behaves within rounds (full retraining) and across rounds."""
    lines = [
        "| model | rule | flow | rounds | median last/first distance | rounds where it shrank "
        "| corr(distance, accuracy gap) within rounds | corr(first-check distance, sparsity) per seed "
        "| median epochs to accuracy plateau |",
        "|" + "---|" * 9,
    ]
    for (model, rule), labels in sorted(groups(rows).items()):
        base = baseline_label(labels)
        if base is None:
            continue
        records = [record for row in labels[base] for record in row.rounds]
        kinds = sorted({kind for record in records for kind in record.get("monitor", {})})
        for kind in kinds:
            ratios, within, across, plateaus = [], [], [], []
            for row in labels[base]:
                firsts, sparsities = [], []
                for record in row.rounds:
                    checks = record.get("monitor", {}).get(kind, [])
                    if len(checks) < 2:
                        continue
                    distances = [c["relative_distance"] for c in checks]
                    gaps = [c["accuracy_gap"] for c in checks]
                    ratios.append(distances[-1] / distances[0] if distances[0] > 0 else math.nan)
                    within.append(pearson(distances, gaps))
                    firsts.append(distances[0])
                    sparsities.append(record["sparsity"])
                    best = max(c["probe_accuracy"] for c in checks)
                    plateaus.append(next(c["epochs"] for c in checks if c["probe_accuracy"] >= best - 0.005))
                # Across rounds per seed: each seed has its own dense reference, so the distance scales
                # differ and pooling the seeds would mix those scales into the correlation.
                across.append(pearson(firsts, sparsities))
            finite = [value for value in within if not math.isnan(value)]
            finite_across = [value for value in across if not math.isnan(value)]
            lines.append(
                f"| {model} | {rule} | {kind} | {len(ratios)} | {statistics.median(ratios):.2f} "
                f"| {sum(r < 1 for r in ratios)} / {len(ratios)} "
                f"| {statistics.mean(finite) if finite else math.nan:+.2f} "
                f"| {statistics.mean(finite_across) if finite_across else math.nan:+.2f} "
                f"| {statistics.median(plateaus):.2f} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the curve
CURVE_FIELDS = (
    "model", "rule", "label", "method", "settings", "seed", "round", "sparsity", "epochs", "stop_reason",
    "cumulative_epochs", "cumulative_flow_seconds", "val_accuracy", "test_accuracy",
)  # fmt: skip


def curve(rows: list[ResultRow]) -> list[dict[str, Any]]:
    """One point per (cell, round), plus round 0 = the dense warm-up (0 epochs, the dense accuracies)."""
    dense = {(r.model, r.seed): r for r in rows if r.method == "dense"}
    points = []
    for row in rows:
        if row.method == "dense":
            continue
        common = {
            "model": row.model,
            "rule": rule_of(row),
            "label": row.label,
            "method": row.method,
            "settings": settings(row),
            "seed": row.seed,
        }
        start = dense.get((row.model, row.seed))
        if start is not None:
            metrics = start.metrics
            dense_point: dict[str, Any] = {"round": 0, "sparsity": 0.0, "epochs": 0.0, "stop_reason": "dense"}
            dense_point.update(cumulative_epochs=0.0, cumulative_flow_seconds=0.0)
            dense_point.update(val_accuracy=metrics.val_accuracy, test_accuracy=metrics.test_accuracy)
            points.append({**common, **dense_point})
        for record in row.rounds:
            points.append({**common, **{key: record[key] for key in CURVE_FIELDS if key in record}})
    return points


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """Mean test accuracy against mean cumulative epochs, one panel per model × rule.

    IMP in black, information flow in blues, gradient flow in reds; settings with the accuracy
    criterion dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(p["model"], p["rule"]) for p in points})
    columns = 2
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.5 * rows), squeeze=False)
    for axis, (model, rule) in zip(axes.flat, panels, strict=False):
        labels = sorted({p["label"] for p in points if (p["model"], p["rule"]) == (model, rule)})
        families: dict[str, list[str]] = {}
        for label in labels:
            method = next(p["method"] for p in points if p["label"] == label)
            families.setdefault(method, []).append(label)
        for label in labels:
            chosen = [p for p in points if (p["model"], p["rule"], p["label"]) == (model, rule, label)]
            rounds = sorted({p["round"] for p in chosen})
            xs = [statistics.mean(p["cumulative_epochs"] for p in chosen if p["round"] == r) for r in rounds]
            ys = [100 * statistics.mean(p["test_accuracy"] for p in chosen if p["round"] == r) for r in rounds]
            method = chosen[0]["method"]
            members = families[method]
            shade = 0.45 + 0.5 * members.index(label) / max(1, len(members) - 1)
            color = {"imp": "black"}.get(method) or plt.get_cmap("Blues" if method == "infcop-if" else "Reds")(shade)
            axis.plot(
                xs,
                ys,
                marker="o",
                markersize=3,
                linewidth=2.5 if method == "imp" else 1.2,
                linestyle="--" if "+acc" in chosen[0]["settings"] else "-",
                color=color,
                label=f"{label}",
            )
        axis.set_title(f"{model}, rule {rule}")
        axis.set_xlabel("cumulative training epochs")
        axis.set_ylabel("test accuracy % (mean over seeds)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="lower right", ncol=2)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.jsonl of suites/infcop-fmnist.yaml")
    parser.add_argument("--csv", type=Path, help="write the accuracy-vs-cumulative-epochs curve here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the curves here")
    args = parser.parse_args(argv)
    rows = read_results(args.results)
    table, verdicts = tables(rows)
    print("### Final sparsity, accuracy and training cost (mean over seeds)\n")
    print(table)
    print("\n### Verdict\n")
    print("\n".join(verdicts))
    print("\n### E-INF-2: IMP's flow distance to the dense reference during full retraining\n")
    print(mechanism(rows))
    points = curve(rows)
    if args.csv is not None:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
            writer.writeheader()
            writer.writerows(points)
    if args.plot is not None:
        plot(points, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
