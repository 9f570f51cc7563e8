"""What the report plots and tabulates, checked against hand-computed numbers on synthetic rows."""

from __future__ import annotations

import csv
import io
import math

import pytest
from report_fixtures import CHANNELS, MLP_LAYERS, SEEDS, accuracy, cell_row, fixture_rows, hap_row, rounds, typed

from secateurs.bench import plot_data
from secateurs.bench.results import parse_row
from secateurs.bench.table import AGGREGATED, aggregate, csv_text, markdown, text_cells


def sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_sparsity_points_are_seed_means_with_sample_std() -> None:
    series = plot_data.sparsity_points(typed(fixture_rows()))
    lap = series["mlp"]["lap"]
    assert [p.sparsity for p in lap] == [0.5, 0.9, 0.99, 0.999]
    expected = [accuracy(0.99, seed, 0.01) for seed in SEEDS]
    point = lap[2]
    assert point.seeds == 3
    assert point.y == pytest.approx(sum(expected) / 3, abs=1e-12)
    assert point.y_std == pytest.approx(sample_std(expected), abs=1e-12)
    assert point.y_std == pytest.approx(0.002, abs=1e-12)  # seeds shift accuracy by 0.002 each
    kept = sum(total - round(0.99 * total) for total in MLP_LAYERS.values())
    assert point.x == pytest.approx(1 - kept / sum(MLP_LAYERS.values()), abs=1e-12)  # realised, not target


def test_sparsity_points_fall_back_to_the_target_and_skip_rows_without_accuracy() -> None:
    row = cell_row("mlp", "lap", 0.8, 0)
    del row["metrics"]["sparsity_prunable"]
    broken = cell_row("mlp", "lap", 0.9, 0)
    del broken["metrics"]["test_accuracy"]
    series = plot_data.sparsity_points(typed([row, broken]))
    assert [(p.x, p.sparsity) for p in series["mlp"]["lap"]] == [(0.8, 0.8)]


def test_log_axis_is_chosen_only_beyond_ninety_percent() -> None:
    assert plot_data.wants_log_remaining(typed([cell_row("mlp", "lap", 0.99, 0)]))
    assert not plot_data.wants_log_remaining(typed([cell_row("mlp", "lap", 0.9, 0), cell_row("mlp", "lap", 0.5, 0)]))


def test_latency_keys_sorted_by_batch_size_and_parallel_jobs() -> None:
    row = cell_row("mlp", "lap", 0.5, 0)
    row["metrics"]["latency_ms"] = {"threads": 2, "batch_256": 3.0, "batch_1": 0.1, "batch_32": 1.0}
    assert plot_data.latency_keys(typed([row])) == ["batch_1", "batch_32", "batch_256"]
    assert plot_data.parallel_jobs(typed([row])) == 1
    row["timings"]["jobs"] = 4
    assert plot_data.parallel_jobs(typed([row, cell_row("mlp", "lap", 0.9, 0)])) == 4


def test_round_curves_average_the_longest_history_per_seed() -> None:
    rows = [
        cell_row("mlp", "imp", 0.36, 0, history={"method": rounds(0, 2, 3.0)}),
        cell_row("mlp", "imp", 0.5904, 0, history={"method": rounds(0, 4, 3.0)}),
        cell_row("mlp", "imp", 0.5904, 1, history={"method": rounds(1, 3, 3.0)}),
        cell_row("mlp", "magnitude", 0.5, 0),  # no rounds: not a curve
    ]
    curves = plot_data.round_curves(typed(rows))
    assert list(curves["mlp"]) == ["imp"]
    curve = curves["mlp"]["imp"]
    assert len(curve) == 4  # seed 0's four rounds; seed 1 reached three
    assert [r.seeds for r in curve] == [2, 2, 2, 1]
    assert curve[1].epochs == pytest.approx(9.0)
    assert curve[1].accuracy == pytest.approx(((0.88) + (0.88 + 0.002)) / 2)
    assert curve[1].sparsity == pytest.approx(1 - 0.8**2)
    assert curve[3].accuracy_std == 0.0


def test_rounds_without_cumulative_epochs_are_ignored() -> None:
    row = cell_row("mlp", "imp", 0.5, 0, history={"method": [{"round": 1, "val_accuracy": 0.9}], "finetune": []})
    assert plot_data.round_curves(typed([row])) == {}


def test_final_epoch_points_use_train_epochs_and_skip_dense() -> None:
    rows = typed(fixture_rows(seeds=(0,)))
    finals = plot_data.final_epoch_points(rows, ["mlp"])
    assert "dense" not in finals["mlp"]
    assert [p.x for p in finals["mlp"]["imp"]] == [9.0, 15.0]
    assert finals["mlp"]["campfire-window"][0].x == 12.0


def test_layer_counts_and_the_chosen_row() -> None:
    rows = typed(fixture_rows(seeds=(0,)))
    first = plot_data.choose_row(rows, None, "layers")
    assert first is not None and first.key == "mlp|magnitude|0.5|0"
    chosen = plot_data.choose_row(rows, "mlp|lap|0.99|0", "layers")
    assert chosen is not None
    counts = plot_data.layer_counts(chosen)
    assert [c.name for c in counts] == list(MLP_LAYERS)
    assert counts[2].kept == 10 and counts[2].total == 1000
    assert counts[2].removed_fraction == pytest.approx(0.99)
    assert plot_data.choose_row(rows, "mlp|dense|0|0", "layers") is None


def test_channel_bands_follow_the_hap_thresholds() -> None:
    # keep: S > 0.25; implant: 0.06 < S <= 0.25; prune: S <= 0.06
    assert plot_data.band_of(0.3, 0.25, 0.06) == "keep"
    assert plot_data.band_of(0.25, 0.25, 0.06) == "implant"
    assert plot_data.band_of(0.06, 0.25, 0.06) == "prune"
    assert plot_data.band_of(0.1, 0.25, None) == "prune"
    row = hap_row(0)
    del row["method_info"]["channel_decisions"]
    ranking = plot_data.channel_ranking(parse_row(row))
    assert ranking is not None
    assert ranking.scores == sorted(v for values in CHANNELS.values() for v in values)
    assert ranking.bands == ["prune", "prune", "prune", "implant", "implant", "keep", "keep", "keep", "keep", "keep"]
    assert list(ranking.band_counts().items()) == [
        ("conv1.weight", {"prune": 1, "implant": 1, "keep": 2}),
        ("layer1.0.conv1.weight", {"prune": 2, "implant": 1, "keep": 3}),
    ]


def test_recorded_channel_decisions_override_the_thresholds() -> None:
    ranking = plot_data.channel_ranking(parse_row(hap_row(0)))
    assert ranking is not None
    # conv1 channel 3 (score 0.2) is recorded "implant", layer1 channel 0 (0.05) "prune", channel 5 (0.08) "implant"
    by_score = dict(zip(ranking.scores, ranking.bands, strict=True))
    assert by_score[0.2] == "implant" and by_score[0.05] == "prune" and by_score[0.08] == "implant"
    assert by_score[0.01] == "prune" and by_score[3.0] == "keep"


def test_a_row_without_channel_scores_has_no_ranking() -> None:
    assert plot_data.channel_ranking(parse_row(cell_row("mlp", "lap", 0.5, 0))) is None


def test_csv_holds_the_aggregates_as_raw_numbers() -> None:
    table = aggregate(typed(fixture_rows()))
    parsed = list(csv.DictReader(io.StringIO(csv_text(table))))
    assert len(parsed) == len(table)
    line = next(r for r in parsed if r["method"] == "lap" and r["sparsity"] == "0.99" and r["model"] == "mlp")
    expected = [accuracy(0.99, seed, 0.01) for seed in SEEDS]
    assert float(line["test_accuracy_mean"]) == pytest.approx(sum(expected) / 3, abs=1e-12)
    assert float(line["test_accuracy_std"]) == pytest.approx(sample_std(expected), abs=1e-12)
    assert line["seeds"] == "3"
    assert {f"{name}_mean" for name, _ in AGGREGATED} <= set(line)
    hap = next(r for r in parsed if r["method"] == "hap")
    assert hap["train_epochs_mean"] == "1.0"


def test_csv_leaves_missing_values_empty() -> None:
    row = cell_row("mlp", "lap", 0.5, 0)
    del row["metrics"]["latency_ms"]
    (line,) = list(csv.DictReader(io.StringIO(csv_text(aggregate(typed([row]))))))
    assert line["latency_b1_ms_mean"] == "" and line["latency_b1_ms_std"] == ""


def test_markdown_and_text_cells_agree() -> None:
    table = aggregate(typed(fixture_rows(seeds=(0,))))
    header, cells = text_cells(table)
    text = markdown(table)
    assert text.splitlines()[0] == "| " + " | ".join(header) + " |"
    assert len(text.splitlines()) == len(cells) + 2
    lap = next(c for c in cells if c[1] == "lap" and c[2] == "0.999")
    assert lap[4] == f"{100 * accuracy(0.999, 0, 0.01):.2f}"
