"""What the report plots, extracted from result rows: small pure functions, no matplotlib.

Every function takes `ResultRow`s (`secateurs.bench.results`) and returns plain series; a row that
lacks an optional value is left out, never an error. What is read here is the report's contract with
the methods (documented in ``docs/reports.md``):

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

from secateurs.bench.results import ResultRow, group_by
from secateurs.bench.table import Value, latency_at, mean_std
from secateurs.bench.table import number as as_number

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


def test_accuracy(row: ResultRow) -> float | None:
    return row.metrics.test_accuracy


def models(rows: Iterable[ResultRow]) -> list[str]:
    """Model names in first-seen order."""
    return list(dict.fromkeys(row.model for row in rows))


def labels(rows: Iterable[ResultRow]) -> list[str]:
    """Method labels: ``dense`` first, then sorted (a stable colour order for every plot)."""
    found = {row.label for row in rows}
    return sorted(found, key=lambda label: (label != DENSE, label))


def points(
    rows: Sequence[ResultRow], x: Value, y: Value = test_accuracy, x_fallback: Value | None = None
) -> dict[str, dict[str, list[Point]]]:
    """``{model: {label: [Point]}}``, one point per (model, label, target sparsity), sorted by x.

    Rows missing y, or missing x (and ``x_fallback``), are skipped; a group with no usable row gives no point.
    """
    series: dict[str, dict[str, list[Point]]] = {}
    for (model, label, sparsity), members in group_by(rows, lambda r: (r.model, r.label, float(r.sparsity))).items():
        pairs = []
        for row in members:
            x_value = as_number(x(row))
            if x_value is None and x_fallback is not None:
                x_value = as_number(x_fallback(row))
            y_value = as_number(y(row))
            if x_value is not None and y_value is not None:
                pairs.append((x_value, y_value))
        if not pairs:
            continue
        x_mean, _ = mean_std([x for x, _ in pairs])
        y_mean, y_std = mean_std([y for _, y in pairs])
        series.setdefault(model, {}).setdefault(label, []).append(Point(x_mean, y_mean, y_std, len(pairs), sparsity))
    for by_label in series.values():
        for line in by_label.values():
            line.sort(key=lambda point: point.x)
    return series


def sparsity_points(rows: Sequence[ResultRow]) -> dict[str, dict[str, list[Point]]]:
    """Test accuracy against the realised fraction of prunable weights removed (the target when not recorded)."""
    return points(rows, lambda row: row.metrics.sparsity_prunable, x_fallback=lambda row: row.sparsity)


def macs_points(rows: Sequence[ResultRow]) -> dict[str, dict[str, list[Point]]]:
    """Test accuracy against the effective MACs per example."""
    return points(rows, lambda row: row.metrics.effective_macs)


def latency_points(rows: Sequence[ResultRow], batch: int) -> dict[str, dict[str, list[Point]]]:
    """Test accuracy against the median latency at ``batch``."""
    return points(rows, latency_at(batch))


def wants_log_remaining(rows: Iterable[ResultRow], threshold: float = 0.9) -> bool:
    """True when some cell removes more than ``threshold`` of the weights (LAP-style extreme sparsities)."""
    return any(float(row.sparsity) > threshold for row in rows)


def latency_batches(rows: Iterable[ResultRow]) -> list[int]:
    """The batch sizes whose latency any row measured, ascending."""
    found: set[int] = set()
    for row in rows:
        if row.metrics.latency_ms is not None:
            found.update(row.metrics.latency_ms.batches())
    return sorted(found)


def latency_keys(rows: Iterable[ResultRow]) -> list[str]:
    """The ``batch_N`` keys measured in any row, by batch size."""
    return [f"batch_{batch}" for batch in latency_batches(rows)]


def parallel_jobs(rows: Iterable[ResultRow]) -> int:
    """The largest ``timings.jobs`` recorded (cells measured while other cells ran beside them); 1 if none."""
    return max((row.timings.jobs for row in rows if row.timings.jobs is not None), default=1)


# ----------------------------------------------------------------------------------- training rounds
@dataclass(frozen=True)
class Round:
    """One round of an iterative method, averaged over seeds."""

    epochs: float
    accuracy: float
    accuracy_std: float
    sparsity: float | None
    seeds: int


def usable_rounds(row: ResultRow) -> list[dict[str, Any]]:
    """The rounds of ``history.method`` that hold ``cumulative_epochs`` and ``val_accuracy``."""
    return [
        entry
        for entry in row.rounds
        if as_number(entry.get("cumulative_epochs")) is not None and as_number(entry.get("val_accuracy")) is not None
    ]


def round_curves(rows: Sequence[ResultRow]) -> dict[str, dict[str, list[Round]]]:
    """``{model: {label: [Round]}}``: per seed the cell with the most rounds, averaged over seeds by round index.

    Cells of one label at lower target sparsities usually replay a prefix of the same rounds, so the
    longest history stands for the label. Round ``i`` is averaged over the seeds that reached it.
    """
    longest: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        rounds = usable_rounds(row)
        if not rounds:
            continue
        per_seed = longest.setdefault((row.model, row.label), {})
        if len(rounds) > len(per_seed.get(row.seed, [])):
            per_seed[row.seed] = rounds
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
    rows: Sequence[ResultRow], models_with_rounds: Iterable[str]
) -> dict[str, dict[str, list[Point]]]:
    """Validation accuracy against ``train_epochs`` for every pruned cell of the given models."""
    wanted = set(models_with_rounds)
    chosen = [row for row in rows if row.model in wanted and row.label != DENSE]
    return points(chosen, lambda row: row.train_epochs, lambda row: row.metrics.val_accuracy)


# ------------------------------------------------------------------------------------- one run
def choose_row(rows: Sequence[ResultRow], key: str | None, has: str) -> ResultRow | None:
    """The row ``key`` if given (None when it lacks ``has``), else the first row whose ``method_info.has``
    is a non-empty dict."""
    for row in rows:
        found = row.info(has)
        if (key is None or row.key == key) and isinstance(found, dict) and found:
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


def layer_counts(row: ResultRow) -> list[LayerCount]:
    """``method_info.layers`` as `LayerCount`s in the recorded order; malformed entries are skipped."""
    layers = row.info("layers")
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


def channel_ranking(row: ResultRow) -> ChannelRanking | None:
    """The sorted channel sensitivities of ``row`` (None without ``method_info.channel_scores``).

    Bands come from ``channel_decisions`` when recorded (they include per-layer caps), otherwise from
    the thresholds by `band_of`.
    """
    scores = row.info("channel_scores")
    if not isinstance(scores, dict) or not scores:
        return None
    thresholds = row.info("channel_thresholds")
    thresholds = thresholds if isinstance(thresholds, dict) else {}
    keep_above = thresholds.get("keep_above")
    implant_above = thresholds.get("implant_above")
    keep_above = float(keep_above) if isinstance(keep_above, int | float) else None
    implant_above = float(implant_above) if isinstance(implant_above, int | float) else None
    decisions = row.info("channel_decisions")
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
