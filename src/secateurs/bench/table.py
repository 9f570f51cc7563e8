"""Aggregate result rows over seeds: mean ± std per model × method × sparsity (Markdown, CSV, cells)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

AGGREGATED = (
    ("test_accuracy", "metrics.test_accuracy"),
    ("test_accuracy_before_finetune", "before_finetune.test_accuracy"),
    ("val_accuracy", "metrics.val_accuracy"),
    ("sparsity_prunable", "metrics.sparsity_prunable"),
    ("sparsity_params", "metrics.sparsity_params"),
    ("sparsity_macs", "metrics.sparsity_macs"),
    ("params", "metrics.params"),
    ("nonzero_params", "metrics.nonzero_params"),
    ("macs", "metrics.effective_macs"),
    ("latency_b1_ms", "metrics.latency_ms.batch_1"),
    ("latency_b256_ms", "metrics.latency_ms.batch_256"),
    ("train_epochs", "train_epochs"),
    ("wall_s", "timings.wall_s"),
    ("flow_check_seconds", "method_info.flow_check_seconds"),
    ("cost_epoch_equivalents", "method_info.cost_epoch_equivalents"),
)


def lookup(row: dict[str, Any], dotted: str) -> Any:
    node: Any = row
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (model, label, sparsity) with ``{name: (mean, std)}`` and the seed count."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["label"], float(row["sparsity"])), []).append(row)
    table = []
    for (model, label, sparsity), members in groups.items():
        entry: dict[str, Any] = {"model": model, "label": label, "sparsity": sparsity, "seeds": len(members)}
        for name, path in AGGREGATED:
            values = [float(v) for v in (lookup(m, path) for m in members) if isinstance(v, int | float)]
            entry[name] = mean_std(values) if values else None
        table.append(entry)
    table.sort(key=lambda e: (e["model"], e["label"] != "dense", e["label"], e["sparsity"]))
    return table


def format_value(value: tuple[float, float] | None, kind: str) -> str:
    """One table cell: ``percent`` (mean ± std in %), ``ms``, ``fraction`` or ``count``; "–" if missing."""
    if value is None:
        return "–"
    mean, std = value
    if kind == "percent":
        return f"{100 * mean:.2f} ± {100 * std:.2f}" if std else f"{100 * mean:.2f}"
    if kind == "ms":
        return f"{mean:.2f}"
    if kind == "fraction":
        return f"{mean:.4f}"
    if kind == "number":
        return f"{mean:.2f} ± {std:.2f}" if std else f"{mean:.2f}"
    return f"{mean:,.0f}"


COLUMNS = (
    ("test acc %", "test_accuracy", "percent"),
    ("before FT %", "test_accuracy_before_finetune", "percent"),
    ("sparsity (prunable)", "sparsity_prunable", "fraction"),
    ("params", "params", "count"),
    ("non-zero", "nonzero_params", "count"),
    ("MACs", "macs", "count"),
    ("b1 ms", "latency_b1_ms", "ms"),
    ("b256 ms", "latency_b256_ms", "ms"),
)


def text_cells(
    table: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS
) -> tuple[list[str], list[list[str]]]:
    """The header and formatted cells of `aggregate` output (columns whose values are all missing are dropped)."""
    used = [c for c in columns if any(entry.get(c[1]) is not None for entry in table)]
    header = ["model", "method", "target sparsity", "seeds", *[c[0] for c in used]]
    rows = []
    for entry in table:
        cells = [entry["model"], entry["label"], f"{entry['sparsity']:g}", str(entry["seeds"])]
        cells += [format_value(entry.get(key), kind) for _, key, kind in used]
        rows.append(cells)
    return header, rows


def markdown(table: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A Markdown table of `aggregate` output (columns whose values are all missing are dropped)."""
    header, rows = text_cells(table, columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def csv_text(table: Sequence[dict[str, Any]]) -> str:
    """`aggregate` output as CSV: model, method, sparsity, seeds, then ``NAME_mean``/``NAME_std`` per aggregate.

    Raw numbers (fractions, counts, milliseconds), empty where a value is missing.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["model", "method", "sparsity", "seeds", *[f"{n}_{s}" for n, _ in AGGREGATED for s in ("mean", "std")]]
    )
    for entry in table:
        values: list[Any] = [entry["model"], entry["label"], entry["sparsity"], entry["seeds"]]
        for name, _ in AGGREGATED:
            pair = entry.get(name)
            values += ["", ""] if pair is None else [repr(float(pair[0])), repr(float(pair[1]))]
        writer.writerow(values)
    return buffer.getvalue()


def percent_left(sparsity: float) -> str:
    """Column heading for a sparsity level: the share of weights kept (``6.36 %`` for 0.9364)."""
    return f"{100 * (1 - sparsity):.2f} %"


def pivot_markdown(
    table: Sequence[dict[str, Any]],
    value: str,
    *,
    model: str | None = None,
    labels: Sequence[str] | None = None,
    digits: int = 2,
) -> str:
    """Methods as rows, sparsity levels as columns (``% left``), ``value`` as mean ± std in percent.

    ``table`` is `aggregate` output; the dense row is left out (quote it separately). ``labels``
    picks and orders the rows (default: every label, in ``table`` order); a missing cell reads ``–``.
    """
    entries = [e for e in table if e["label"] != "dense" and (model is None or e["model"] == model)]
    labels = list(labels) if labels is not None else list(dict.fromkeys(e["label"] for e in entries))
    entries = [e for e in entries if e["label"] in labels]
    levels = sorted({e["sparsity"] for e in entries})
    by_key = {(e["label"], e["sparsity"]): e for e in entries}
    lines = [
        "| method | " + " | ".join(percent_left(level) for level in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for label in labels:
        cells = []
        for level in levels:
            entry = by_key.get((label, level))
            stats = entry.get(value) if entry is not None else None
            cells.append("–" if stats is None else f"{100 * stats[0]:.{digits}f} ± {100 * stats[1]:.{digits}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
