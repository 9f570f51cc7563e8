"""The InfCoP report: verdict numbers, the curve CSV points and the mechanism summary on hand-made rows."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from secateurs.bench.results import ResultRow, parse_row


@pytest.fixture(scope="module")
def report(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("infcop_report")


def cell(label: str, method: str, seed: int, test: float, epochs: float, **options: Any) -> ResultRow:
    rounds = [
        {"round": 1, "sparsity": 0.5, "epochs": epochs / 2, "stop_reason": "flow" if method != "imp" else "budget",
         "cumulative_epochs": epochs / 2, "cumulative_flow_seconds": 0.1, "val_accuracy": 0.8, "test_accuracy": 0.8},
        {"round": 2, "sparsity": 0.75, "epochs": epochs / 2, "stop_reason": "budget",
         "cumulative_epochs": epochs, "cumulative_flow_seconds": 0.2, "val_accuracy": test, "test_accuracy": test},
    ]  # fmt: skip
    if method == "imp":
        checks = [
            {"epochs": 0.5, "relative_distance": 0.4, "accuracy_gap": 0.04, "probe_accuracy": 0.80},
            {"epochs": 1.0, "relative_distance": 0.2, "accuracy_gap": 0.02, "probe_accuracy": 0.81},
            {"epochs": 1.5, "relative_distance": 0.1, "accuracy_gap": 0.01, "probe_accuracy": 0.82},
        ]
        for record in rounds:
            record["monitor"] = {"information": checks}
    return parse_row(
        {
            "key": f"mlp|{label}|0.75|{seed}",
            "suite": "infcop",
            "sparsity": 0.75,
            "model": "mlp",
            "label": label,
            "method": method,
            "seed": seed,
            "config": {"options": {"rounds": 2, **options}},
            "metrics": {"test_accuracy": test, "val_accuracy": test, "sparsity_prunable": 0.75},
            "train_epochs": epochs,
            "method_info": {"flow_check_seconds": 0.2, "cost_epoch_equivalents": epochs + 0.1},
            "history": {"method": rounds},
        }
    )


def rows() -> list[ResultRow]:
    dense = parse_row(
        {
            "key": "mlp|dense|0|0",
            "suite": "infcop",
            "sparsity": 0.0,
            "model": "mlp",
            "label": "dense",
            "method": "dense",
            "seed": 0,
            "metrics": {"val_accuracy": 0.7, "test_accuracy": 0.69},
        }
    )
    return [
        dense,
        cell("imp", "imp", 0, 0.880, 6.0, monitor="information"),
        cell("imp", "imp", 1, 0.884, 6.0, monitor="information"),
        cell("short", "imp", 0, 0.870, 2.0, early_round_epochs=0.5),
        cell("short", "imp", 1, 0.870, 2.0, early_round_epochs=0.5),
        cell("if-close", "infcop-if", 0, 0.881, 3.0, epsilon=0.1, relative=True, stop_on_accuracy=False),
        cell("if-close", "infcop-if", 1, 0.881, 3.0, epsilon=0.1, relative=True, stop_on_accuracy=False),
        cell("if-far", "infcop-if", 0, 0.850, 1.0, epsilon=1.0),
        cell("if-far", "infcop-if", 1, 0.850, 1.0, epsilon=1.0),
    ]


def test_verdict_picks_the_cheapest_setting_within_three_tenths(report: ModuleType) -> None:
    table, verdicts = report.tables(rows())
    assert "| mlp | lth | imp | – | 2 | 0.7500 | 88.20 ± 0.28 | +0.00 | 6.00 | 1.00 |" in table
    assert "| mlp | lth | if-close | 0.1 rel | 2 | 0.7500 | 88.10 ± 0.00 | -0.10 | 3.00 | 0.50 |" in table
    assert "| mlp | lth | if-far | 1 abs +acc |" in table
    (line,) = verdicts
    assert "IMP 88.20 % after 6.0 epochs" in line
    assert "Flow-free control short: 87.00 % (-1.20) after 2.0 epochs = 0.33 of IMP's" in line
    assert "if-close (0.1 rel), 88.10 % (-0.10) after 3.0 epochs = 0.50 of IMP's" in line
    assert "meets the ≤ 0.5× target" in line and "1 InfCoP setting(s)" in line


def test_curve_has_a_dense_start_and_one_point_per_round(report: ModuleType) -> None:
    points = report.curve(rows())
    imp_seed0 = [p for p in points if p["label"] == "imp" and p["seed"] == 0]
    assert [(p["round"], p["cumulative_epochs"], p["test_accuracy"]) for p in imp_seed0] == [
        (0, 0.0, 0.69),
        (1, 3.0, 0.8),
        (2, 6.0, 0.88),
    ]
    assert len([p for p in points if p["label"] == "if-far" and p["seed"] == 1]) == 2  # no dense row for seed 1


def test_mechanism_summarises_the_monitor(report: ModuleType) -> None:
    text = report.mechanism(rows())
    # 4 rounds (2 seeds × 2), last/first = 0.1/0.4 = 0.25, distance and gap proportional (+1); every
    # round starts at the same distance (no correlation with sparsity); the accuracy peaks at 1.5 epochs.
    assert "| mlp | lth | information | 4 | 0.25 | 4 / 4 | +1.00 | +nan | 1.50 |" in text


def test_across_round_correlation_is_taken_per_seed(report: ModuleType) -> None:
    # Seed 1's distances sit one unit above seed 0's. Within each seed the first-check distance rises
    # exactly with sparsity (+1); pooled, the offset between seeds would pull it down to about +0.27.
    imp_rows = []
    for seed, offset in ((0, 0.0), (1, 1.0)):
        row = cell("imp", "imp", seed, 0.88, 6.0, monitor="information")
        assert row.history is not None
        row.history.method = [
            {
                "round": k + 1,
                "sparsity": sparsity,
                "monitor": {
                    "information": [
                        {"epochs": 0.5, "relative_distance": offset + 0.1 * (k + 1), "accuracy_gap": 0.02,
                         "probe_accuracy": 0.80},
                        {"epochs": 1.0, "relative_distance": offset + 0.05 * (k + 1), "accuracy_gap": 0.01,
                         "probe_accuracy": 0.81},
                    ]
                },
            }
            for k, sparsity in enumerate((0.2, 0.4, 0.6))
        ]  # fmt: skip
        imp_rows.append(row)
    text = report.mechanism(imp_rows)
    assert "| mlp | lth | information | 6 |" in text
    assert "| +1.00 | 1.00 |" in text
