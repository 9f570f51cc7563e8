"""Real Fashion-MNIST end to end: train, prune, fine-tune, bench (the CI installs the data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secateurs.bench.results import ResultsFile
from secateurs.cli import main


def test_train_prune_finetune_on_real_data(tmp_path: Path) -> None:
    dense, pruned = tmp_path / "dense", tmp_path / "pruned"
    assert main(["--quiet", "train", "--model", "lenet300", "--epochs", "1", "--out", str(dense), "--no-latency"]) == 0
    info = json.loads((dense / "run.json").read_text())
    assert info["preprocessing"]["mean"] == [0.286] and info["preprocessing"]["std"] == [0.353]
    assert info["metrics"]["val_accuracy"] > 0.82  # ENVIRONMENT.md: 83.4 % test accuracy after one epoch
    assert info["metrics"]["test_accuracy"] > 0.82
    assert (
        main(
            [
                "--quiet",
                "prune",
                "--from",
                str(dense),
                "--method",
                "magnitude",
                "--sparsity",
                "0.9",
                "--scope",
                "global",
                "--finetune-epochs",
                "0.5",
                "--finetune-lr",
                "0.01",
                "--out",
                str(pruned),
            ]
        )
        == 0
    )
    result = json.loads((pruned / "run.json").read_text())
    metrics = result["metrics"]
    assert metrics["sparsity_prunable"] == pytest.approx(0.9, abs=1e-6)
    assert metrics["nonzero_params"] < 0.11 * metrics["params"]
    assert metrics["effective_macs"] < 0.11 * metrics["macs"]
    assert metrics["test_accuracy"] > 0.8  # 90 % of the weights gone, half an epoch of fine-tuning
    assert set(metrics["latency_ms"]) >= {"batch_1", "batch_256", "threads"}
    assert result["metrics_before_finetune"]["test_accuracy"] < metrics["test_accuracy"] + 0.05


@pytest.mark.slow
def test_smoke_suite_runs_and_resumes_without_duplicates(tmp_path: Path) -> None:
    suite = Path(__file__).resolve().parents[2] / "suites" / "smoke.yaml"
    out = tmp_path / "smoke"
    assert main(["--quiet", "bench", str(suite), "--out", str(out), "--set", "measure.latency=false"]) == 0
    rows = ResultsFile(out / "results.jsonl").read()
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys)) == 1 + 4 * 2  # the dense row + 4 methods × 2 sparsities
    by_label = {(row.label, row.sparsity): row for row in rows}
    dense = by_label[("dense", 0.0)].metrics.test_accuracy
    assert dense is not None and dense > 0.8
    for label in ("magnitude", "magnitude-global", "magnitude-global-raw"):
        assert by_label[(label, 0.5)].metrics.sparsity_prunable == pytest.approx(0.5, abs=1e-5)
        assert by_label[(label, 0.9)].metrics.sparsity_prunable == pytest.approx(0.9, abs=1e-5)
    # magnitude beats random before fine-tuning at 90 % (the floor every method must beat)
    magnitude = by_label[("magnitude", 0.9)].metrics_before_finetune.test_accuracy
    random = by_label[("random", 0.9)].metrics_before_finetune.test_accuracy
    assert magnitude is not None and random is not None and magnitude > random + 0.1
    # a re-run finds every cell done and adds nothing
    assert main(["--quiet", "bench", str(suite), "--out", str(out), "--set", "measure.latency=false"]) == 0
    assert [row.key for row in ResultsFile(out / "results.jsonl").read()] == keys
