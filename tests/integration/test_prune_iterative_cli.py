"""``secateurs prune --method imp|infcop-* --rounds R --rule …`` end to end on the synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secateurs.cli import main


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "lenet300"
    code = main(
        [
            "-q",
            "train",
            "--model",
            "lenet300",
            "--data",
            "synthetic",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-latency",
        ]
    )
    assert code == 0
    return out


def test_infcop_run_records_every_round(dense: Path, tmp_path: Path) -> None:
    out = tmp_path / "infcop"
    code = main(
        [
            "-q", "prune", "--from", str(dense), "--method", "infcop-if", "--rounds", "2", "--sparsity", "0.64",
            "--finetune-epochs", "1", "--finetune-lr", "0.01", "--option", "check_every=0.5",
            "--option", "flow_subset=50", "--out", str(out), "--no-latency",
        ]
    )  # fmt: skip
    assert code == 0
    info = json.loads((out / "run.json").read_text())
    rounds = info["history"]["method"]
    assert [r["round"] for r in rounds] == [0, 1, 2]  # round 0: InfCoP's dense cycle ("iteration 0")
    assert [r["sparsity"] for r in rounds] == pytest.approx([0.0, 0.4, 0.64], abs=1e-3)  # 1 − 0.6^t
    for record in rounds:
        assert record["stop_reason"] in {"flow", "accuracy", "budget"}
        assert record["epochs"] in (0.5, 1.0) and record["flow_seconds"] > 0
        assert {"val_accuracy", "test_accuracy", "checks"} <= set(record)
    assert info["train_epochs"] == pytest.approx(sum(r["epochs"] for r in rounds))
    method_info = info["method_info"]
    checks = sum(r["flow_seconds"] for r in rounds)
    assert method_info["flow_check_seconds"] == pytest.approx(method_info["reference_flow_seconds"] + checks)
    assert rounds[-1]["cumulative_flow_seconds"] == pytest.approx(method_info["flow_check_seconds"])
    assert info["metrics"]["sparsity_prunable"] == pytest.approx(0.64, abs=1e-3)
    assert info["config"]["method"]["options"] == {"rounds": 2, "check_every": 0.5, "flow_subset": 50}


def test_rule_flag_feeds_the_options(dense: Path, tmp_path: Path) -> None:
    out = tmp_path / "sap"
    code = main(
        [
            "-q", "prune", "--from", str(dense), "--method", "imp", "--rounds", "1", "--rule", "sap",
            "--sparsity", "0", "--finetune-epochs", "0.5", "--out", str(out), "--no-latency",
        ]
    )  # fmt: skip
    assert code == 0
    info = json.loads((out / "run.json").read_text())
    assert info["method_info"]["rule"] == "sap" and info["method_info"]["scope"] == "global"
    assert 0.2 < info["history"]["method"][0]["prune_fraction"] < 0.5


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "magnitude", "--rounds", "3"], "--rounds does not apply to method 'magnitude'; methods that"),
        (["--method", "random", "--rule", "sap"], "--rule does not apply to method 'random'"),
        (["--method", "imp", "--rounds", "3", "--option", "rounds=4"], "contradicts --option rounds=4"),
        (["--method", "imp", "--rule", "lottery"], "rule: Input should be 'lth' or 'sap'"),
        (["--method", "infcop-if", "--option", "epsilon=0"], "epsilon: Input should be greater than 0"),
        (["--method", "infcop-gf", "--option", "check_every=2"], "check_every (2.0 epochs) exceeds"),
        (["--method", "infcop-if", "--option", "flow_subset=5000"], "flow subset must hold 2 to 100 validation"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    dense: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    out = tmp_path / "bad"
    code = main(
        ["prune", "--from", str(dense), "--sparsity", "0.5", "--finetune-epochs", "1", "--out", str(out),
         "--no-latency", *arguments]
    )  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert message in error and "Traceback" not in error
    assert not out.exists()  # nothing half-written
