"""Tables of result rows: mean ± std over seeds per model × method × sparsity (Markdown, CSV, cells),
and the helpers the benchmark scripts build their own tables with.

`aggregate` reduces `ResultRow`s to one entry per (model, label, sparsity) holding ``(mean, std)``
for every `AGGREGATED` value; `markdown`, `text_cells`, `csv_text` and `pivot_markdown` print it.
The helpers: `values_of` (a column of numbers), `mean_std` and `stats` (the reduction),
`format_mean_std` / `format_stats` (one cell, "–" when empty), `markdown_table` (any Markdown table).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from secateurs.bench.results import ResultRow, group_by

Value = Callable[[ResultRow], object]
"""How a table reads one number from a row (None, or anything not a number, counts as missing)."""


def latency_at(batch: int) -> Value:
    """The median latency (ms) at ``batch`` of a row (None when not measured)."""
    return lambda row: row.metrics.latency_ms.at(batch) if row.metrics.latency_ms is not None else None


AGGREGATED: tuple[tuple[str, Value], ...] = (
    ("test_accuracy", lambda row: row.metrics.test_accuracy),
    ("test_accuracy_before_finetune", lambda row: row.metrics_before_finetune.test_accuracy),
    ("val_accuracy", lambda row: row.metrics.val_accuracy),
    ("sparsity_prunable", lambda row: row.metrics.sparsity_prunable),
    ("sparsity_params", lambda row: row.metrics.sparsity_params),
    ("sparsity_macs", lambda row: row.metrics.sparsity_macs),
    ("params", lambda row: row.metrics.params),
    ("nonzero_params", lambda row: row.metrics.nonzero_params),
    ("macs", lambda row: row.metrics.effective_macs),
    ("latency_b1_ms", latency_at(1)),
    ("latency_b256_ms", latency_at(256)),
    ("train_epochs", lambda row: row.train_epochs),
    ("wall_s", lambda row: row.timings.wall_s),
    ("flow_check_seconds", lambda row: row.info("flow_check_seconds")),
    ("cost_epoch_equivalents", lambda row: row.info("cost_epoch_equivalents")),
)
"""Name and reader of every value `aggregate` reduces over seeds."""


def number(value: object) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def values_of(rows: Iterable[ResultRow], value: Value, scale: float = 1.0) -> list[float]:
    """``value`` of each row that has it as a number, times ``scale``, in row order."""
    found = (number(value(row)) for row in rows)
    return [v * scale for v in found if v is not None]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def stats(values: Sequence[float]) -> tuple[float, float] | None:
    """`mean_std`, or None for no values."""
    return mean_std(values) if values else None


Spread = Literal["nonzero", "several", "always", "never"]


def format_stats(value: tuple[float, float] | None, digits: int = 2, spread: Spread = "nonzero") -> str:
    """One cell: ``mean ± std`` with ``digits`` decimals, "–" for None.

    ``spread`` says when the ``± std`` part is shown: when the std is not zero (``nonzero``),
    always, or never (``several`` is `format_mean_std`'s: it needs the values).
    """
    if value is None:
        return "–"
    mean, std = value
    shown = spread == "always" or (spread == "nonzero" and bool(std))
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if shown else f"{mean:.{digits}f}"


def format_mean_std(values: Sequence[float], digits: int = 2, spread: Spread = "nonzero") -> str:
    """`format_stats` of ``values``; ``spread="several"`` shows ``± std`` whenever there are two or more."""
    if not values:
        return "–"
    if spread == "several":
        spread = "always" if len(values) > 1 else "never"
    return format_stats(mean_std(values), digits, spread)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A Markdown table; ``right`` marks right-aligned columns (``---:``), default none."""
    align = right if right is not None else [False] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if r else "---|" for r in align)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def aggregate(rows: Iterable[ResultRow]) -> list[dict[str, Any]]:
    """One entry per (model, label, sparsity) with ``{name: (mean, std)}`` and the seed count."""
    groups = group_by(rows, lambda row: (row.model, row.label, float(row.sparsity)))
    table = []
    for (model, label, sparsity), members in groups.items():
        entry: dict[str, Any] = {"model": model, "label": label, "sparsity": sparsity, "seeds": len(members)}
        for name, value in AGGREGATED:
            entry[name] = stats(values_of(members, value))
        table.append(entry)
    table.sort(key=lambda e: (e["model"], e["label"] != "dense", e["label"], e["sparsity"]))
    return table


def format_value(value: tuple[float, float] | None, kind: str) -> str:
    """One table cell: ``percent`` (mean ± std in %), ``ms``, ``fraction`` or ``count``; "–" if missing."""
    if value is None:
        return "–"
    mean, std = value
    if kind == "percent":
        return format_stats((100 * mean, 100 * std))
    if kind == "ms":
        return f"{mean:.2f}"
    if kind == "fraction":
        return f"{mean:.4f}"
    if kind == "number":
        return format_stats(value)
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
    return markdown_table(header, rows)


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
    rows = []
    for label in labels:
        cells = [label]
        for level in levels:
            entry = by_key.get((label, level))
            found = entry.get(value) if entry is not None else None
            percent = None if found is None else (100 * found[0], 100 * found[1])
            cells.append(format_stats(percent, digits, "always"))
        rows.append(cells)
    return markdown_table(["method", *[percent_left(level) for level in levels]], rows)
