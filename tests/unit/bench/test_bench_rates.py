"""The suite axis "rounds of per-layer rates": cells, keys, rows and the README pivot table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from secateurs.bench.results import parse_rows
from secateurs.bench.runner import run_suite
from secateurs.bench.suite import cells, load_suite
from secateurs.bench.table import aggregate, pivot_markdown
from secateurs.errors import ConfigError


def write_suite(tmp_path: Path, **changes: object) -> Path:
    suite = {
        "name": "rates",
        "data": {"name": "synthetic"},
        "seeds": [0],
        "models": [{"name": "lenet300", "train": {"epochs": 1, "batch_size": 64, "lr": 0.05}}],
        "methods": [{"name": "magnitude"}, {"name": "lap-global"}, {"name": "lap", "sparsities": [0.5]}],
        "rates": [0.5, 0.5, 0.25],
        "rounds": [1, 2],
        "finetune": {"epochs": 0.25, "batch_size": 64, "lr": 0.01},
        "measure": {"latency": False},
        **changes,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_rate_rounds_are_a_sparsity_axis(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path))
    keys = [cell.key for cell in cells(suite)]
    assert keys == [
        "lenet300|magnitude|r1|0",
        "lenet300|magnitude|r2|0",
        "lenet300|lap-global|r1|0",
        "lenet300|lap-global|r2|0",
        "lenet300|lap|0.5|0",
    ]
    config = next(cell for cell in cells(suite) if cell.rounds == 2).prune_config()
    assert config.rates == (0.5, 0.5, 0.25) and config.rounds == 2 and config.sparsity == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sparsities": [0.5]}, "either 'sparsities' or 'rates'"),
        ({"rounds": None}, "'rates' and 'rounds' go together"),
        ({"rates": [1.5, 0.5, 0.5]}, r"every rate must be in \[0, 1\)"),
    ],
)
def test_bad_rate_axes_are_config_errors(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, **changes))


def test_a_rate_suite_records_round_nominal_and_realised_sparsity(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_suite(write_suite(tmp_path), out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_key = {row["key"]: row for row in rows}
    # lenet300 on 28×28: 235,200 + 30,000 + 1,000 weights; round 2 keeps 1/4, 1/4 and 9/16 of them
    nominal = 1 - (235_200 / 4 + 30_000 / 4 + 1_000 * 0.5625) / 266_200
    row = by_key["lenet300|magnitude|r2|0"]
    assert row["round"] == 2 and row["rates"] == [0.5, 0.5, 0.25]
    assert row["sparsity"] == pytest.approx(nominal, abs=1e-12)
    # realised: 1,000 · 9/16 = 562.5 keeps round(562.5) = 562 (half to even)
    assert row["metrics"]["sparsity_prunable"] == pytest.approx(1 - (58_800 + 7_500 + 562) / 266_200, abs=1e-12)
    assert row["method_info"]["protocol"]["layers"]["classifier.weight"] == pytest.approx(0.4375)
    assert by_key["lenet300|lap-global|r2|0"]["sparsity"] == row["sparsity"]
    assert by_key["lenet300|lap|0.5|0"]["sparsity"] == 0.5
    assert 0.0 <= row["metrics_before_finetune"]["test_accuracy"] <= 1.0
    assert row["schema_version"] == 2 and "before_finetune" not in row
    table = pivot_markdown(
        aggregate(parse_rows(rows)), "test_accuracy_before_finetune", labels=["magnitude", "lap-global"]
    )
    lines = table.splitlines()
    assert lines[0] == f"| method | {100 * (1 - nominal_at(1)):.2f} % | {100 * (1 - nominal):.2f} % |"
    assert lines[0] == "| method | 50.09 % | 25.12 % |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| magnitude", "| lap-global"]
    assert lines[2].count("±") == 2


def nominal_at(rounds: int) -> float:
    kept = (235_200 + 30_000) * 0.5**rounds + 1_000 * 0.75**rounds
    return 1 - kept / 266_200
