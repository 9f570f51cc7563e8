"""What the report plots, extracted from result rows: small pure functions, no matplotlib.

Every function takes ``results.jsonl`` rows (dicts, see `secateurs.bench.runner`) and returns plain
series; a row that lacks an optional key is left out, never an error. The keys read here are the
report's contract with the methods (documented in ``docs/reports.md``):

* ``metrics.test_accuracy``, ``metrics.val_accuracy``, ``metrics.sparsity_prunable``,
  ``metrics.effective_macs``, ``metrics.latency_ms.batch_N`` and ``train_epochs``;
* ``history.method``: a list of per-round dicts; rounds holding ``cumulative_epochs`` and
  ``val_accuracy`` (and optionally ``sparsity``) give the accuracy-vs-training-epochs curves;
* ``method_info.layers``: ``{weight name: [kept, total]}`` (per-layer sparsity bars);
* ``method_info.channel_scores``: ``{layer: [score per output channel]}`` with
  ``method_info.channel_thresholds``: ``{"keep_above": t_p, "implant_above": t_ni or null}`` and
  optionally ``method_info.channel_decisions``: ``{layer: ["keep" | "implant" | "prune", ...]}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from secateurs.bench.table import lookup, mean_std

DENSE = "dense"
BANDS = ("prune", "implant", "keep")


@dataclass(frozen=True)
class Point:
    """One aggregated point: x and y are means over ``seeds`` rows, ``y_std`` the sample std of y."""

    x: float
    y: float
    y_std: float
    seeds: int
    sparsity: float


def number(row: dict[str, Any], path: str) -> float | None:
    """The value at dotted ``path`` as a float, or None when missing or not a number."""
    value = lookup(row, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def models(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Model names in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(str(row["model"]), None)
    return list(seen)


def labels(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Method labels: ``dense`` first, then sorted (a stable colour order for every plot)."""
    found = {str(row.get("label", row.get("method"))) for row in rows}
    return sorted(found, key=lambda label: (label != DENSE, label))


def _groups(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for row in rows:
        key = (str(row["model"]), str(row.get("label", row.get("method"))), float(row["sparsity"]))
        groups.setdefault(key, []).append(row)
    return groups


def points(
    rows: Sequence[dict[str, Any]], x_path: str, y_path: str = "metrics.test_accuracy", x_fallback: str | None = None
) -> dict[str, dict[str, list[Point]]]:
    """``{model: {label: [Point]}}``, one point per (model, label, target sparsity), sorted by x.

    Rows missing y, or missing x (and ``x_fallback``), are skipped; a group with no usable row gives no point.
    """
    series: dict[str, dict[str, list[Point]]] = {}
    for (model, label, sparsity), members in _groups(rows).items():
        pairs = []
        for row in members:
            x = number(row, x_path)
            if x is None and x_fallback is not None:
                x = number(row, x_fallback)
            y = number(row, y_path)
            if x is not None and y is not None:
                pairs.append((x, y))
        if not pairs:
            continue
        x_mean, _ = mean_std([x for x, _ in pairs])
        y_mean, y_std = mean_std([y for _, y in pairs])
        series.setdefault(model, {}).setdefault(label, []).append(Point(x_mean, y_mean, y_std, len(pairs), sparsity))
    for by_label in series.values():
        for line in by_label.values():
            line.sort(key=lambda point: point.x)
    return series


def sparsity_points(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[Point]]]:
    """Test accuracy against the realised fraction of prunable weights removed (the target when not recorded)."""
    return points(rows, "metrics.sparsity_prunable", x_fallback="sparsity")


def wants_log_remaining(rows: Iterable[dict[str, Any]], threshold: float = 0.9) -> bool:
    """True when some cell removes more than ``threshold`` of the weights (LAP-style extreme sparsities)."""
    return any(float(row["sparsity"]) > threshold for row in rows)


def latency_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The ``batch_N`` keys measured in any row, by batch size."""
    keys: set[str] = set()
    for row in rows:
        latency = lookup(row, "metrics.latency_ms")
        if isinstance(latency, dict):
            keys.update(k for k, v in latency.items() if k.startswith("batch_") and isinstance(v, int | float))
    return sorted(keys, key=lambda key: int(key.removeprefix("batch_")) if key[6:].isdigit() else 0)


def parallel_jobs(rows: Iterable[dict[str, Any]]) -> int:
    """The largest ``timings.jobs`` recorded (cells measured while other cells ran beside them); 1 if none."""
    return max((int(v) for v in (number(row, "timings.jobs") for row in rows) if v is not None), default=1)


# ----------------------------------------------------------------------------------- training rounds
@dataclass(frozen=True)
class Round:
    """One round of an iterative method, averaged over seeds."""

    epochs: float
    accuracy: float
    accuracy_std: float
    sparsity: float | None
    seeds: int


def usable_rounds(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The rounds of ``history.method`` that hold ``cumulative_epochs`` and ``val_accuracy``."""
    history = lookup(row, "history.method")
    if not isinstance(history, list):
        return []
    return [
        entry
        for entry in history
        if isinstance(entry, dict)
        and isinstance(entry.get("cumulative_epochs"), int | float)
        and isinstance(entry.get("val_accuracy"), int | float)
    ]


def round_curves(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[Round]]]:
    """``{model: {label: [Round]}}``: per seed the cell with the most rounds, averaged over seeds by round index.

    Cells of one label at lower target sparsities usually replay a prefix of the same rounds, so the
    longest history stands for the label. Round ``i`` is averaged over the seeds that reached it.
    """
    longest: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        rounds = usable_rounds(row)
        if not rounds:
            continue
        per_seed = longest.setdefault((str(row["model"]), str(row.get("label", row.get("method")))), {})
        seed = int(row.get("seed", 0))
        if len(rounds) > len(per_seed.get(seed, [])):
            per_seed[seed] = rounds
    curves: dict[str, dict[str, list[Round]]] = {}
    for (model, label), per_seed in longest.items():
        depth = max(len(rounds) for rounds in per_seed.values())
        curve = []
        for index in range(depth):
            reached = [rounds[index] for rounds in per_seed.values() if len(rounds) > index]
            epochs, _ = mean_std([float(r["cumulative_epochs"]) for r in reached])
            accuracy, spread = mean_std([float(r["val_accuracy"]) for r in reached])
            sparsities = [float(r["sparsity"]) for r in reached if isinstance(r.get("sparsity"), int | float)]
            sparsity = mean_std(sparsities)[0] if sparsities else None
            curve.append(Round(epochs, accuracy, spread, sparsity, len(reached)))
        curves.setdefault(model, {})[label] = curve
    return curves


def final_epoch_points(
    rows: Sequence[dict[str, Any]], models_with_rounds: Iterable[str]
) -> dict[str, dict[str, list[Point]]]:
    """Validation accuracy against ``train_epochs`` for every pruned cell of the given models."""
    wanted = set(models_with_rounds)
    chosen = [row for row in rows if row["model"] in wanted and row.get("label") != DENSE]
    return points(chosen, "train_epochs", "metrics.val_accuracy")


# ------------------------------------------------------------------------------------- one run
def choose_row(rows: Sequence[dict[str, Any]], key: str | None, has: str) -> dict[str, Any] | None:
    """The row ``key`` if given (None when it lacks ``has``), else the first row whose ``has`` path is a dict."""
    for row in rows:
        if (key is None or row["key"] == key) and isinstance(lookup(row, has), dict) and lookup(row, has):
            return row
    return None


@dataclass(frozen=True)
class LayerCount:
    name: str
    kept: int
    total: int

    @property
    def removed_fraction(self) -> float:
        return 1.0 - self.kept / self.total if self.total else 0.0


def layer_counts(row: dict[str, Any]) -> list[LayerCount]:
    """``method_info.layers`` as `LayerCount`s in the recorded order; malformed entries are skipped."""
    layers = lookup(row, "method_info.layers")
    if not isinstance(layers, dict):
        return []
    counts = []
    for name, value in layers.items():
        if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
            counts.append(LayerCount(str(name), int(value[0]), int(value[1])))
    return counts


@dataclass(frozen=True)
class ChannelRanking:
    """Every channel's sensitivity, ascending, with its layer and band."""

    scores: list[float]
    layers: list[str]
    bands: list[str]
    keep_above: float | None
    implant_above: float | None
    layer_order: tuple[str, ...] = ()
    """The layers as recorded (model order)."""

    def band_counts(self) -> dict[str, dict[str, int]]:
        """``{layer: {band: count}}`` in recorded layer order."""
        counts: dict[str, dict[str, int]] = {layer: dict.fromkeys(BANDS, 0) for layer in self.layer_order}
        for layer, band in zip(self.layers, self.bands, strict=True):
            counts.setdefault(layer, dict.fromkeys(BANDS, 0))[band] += 1
        return counts


def band_of(score: float, keep_above: float | None, implant_above: float | None) -> str:
    """HAP's rule: S > t_p kept; t_ni < S ≤ t_p implanted; S ≤ t_ni (or ≤ t_p without implants) pruned."""
    if keep_above is None or score > keep_above:
        return "keep"
    if implant_above is not None and score > implant_above:
        return "implant"
    return "prune"


def channel_ranking(row: dict[str, Any]) -> ChannelRanking | None:
    """The sorted channel sensitivities of ``row`` (None without ``method_info.channel_scores``).

    Bands come from ``channel_decisions`` when recorded (they include per-layer caps), otherwise from
    the thresholds by `band_of`.
    """
    scores = lookup(row, "method_info.channel_scores")
    if not isinstance(scores, dict) or not scores:
        return None
    thresholds = lookup(row, "method_info.channel_thresholds")
    thresholds = thresholds if isinstance(thresholds, dict) else {}
    keep_above = thresholds.get("keep_above")
    implant_above = thresholds.get("implant_above")
    keep_above = float(keep_above) if isinstance(keep_above, int | float) else None
    implant_above = float(implant_above) if isinstance(implant_above, int | float) else None
    decisions = lookup(row, "method_info.channel_decisions")
    decisions = decisions if isinstance(decisions, dict) else {}
    entries = []
    for layer, values in scores.items():
        if not isinstance(values, list):
            continue
        recorded = decisions.get(layer)
        for index, value in enumerate(values):
            if not isinstance(value, int | float):
                continue
            band = (
                str(recorded[index])
                if isinstance(recorded, list) and index < len(recorded) and recorded[index] in BANDS
                else band_of(float(value), keep_above, implant_above)
            )
            entries.append((float(value), str(layer), band))
    if not entries:
        return None
    entries_in_order = list(entries)
    entries.sort(key=lambda entry: entry[0])
    return ChannelRanking(
        scores=[e[0] for e in entries],
        layers=[e[1] for e in entries],
        bands=[e[2] for e in entries],
        keep_above=keep_above,
        implant_above=implant_above,
        layer_order=tuple(dict.fromkeys(entry[1] for entry in entries_in_order)),
    )
