"""A suite whose budgets are in optimizer steps: dense training, one-shot fine-tuning, IMP rounds and a
gradual method each take exactly their steps, and the rows count them in epochs of this dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secateurs.bench.results import ResultsFile
from secateurs.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = """
name: steps
data: {name: synthetic}
models:
  - name: lenet300
    train: {steps: 6, batch_size: 32, eval_subset: 50}
methods:
  - {name: magnitude}
  - {name: imp, options: {rounds: 2}}
  - {name: gmp, options: {every: 1}}
sparsities: [0.5]
finetune: {steps: 4, batch_size: 32, eval_subset: 50}
measure: {latency: false}
"""


def test_a_suite_with_budgets_in_steps(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "bench"
    assert main(["--quiet", "--threads", "1", "bench", str(suite), "--out", str(out)]) == 0
    rows = {row.label: row.model_dump(mode="json") for row in ResultsFile(out / "results.jsonl").read()}
    per_epoch = 1100 // 32  # the synthetic training split: 1,100 examples
    assert rows["dense"]["train_epochs"] == pytest.approx(6 / per_epoch)
    assert rows["magnitude"]["train_epochs"] == pytest.approx(4 / per_epoch)
    assert rows["imp"]["train_epochs"] == pytest.approx(2 * 4 / per_epoch)  # 4 steps per round
    assert rows["gmp"]["train_epochs"] == pytest.approx(4 / per_epoch)
    assert [record["step"] for record in rows["magnitude"]["history"]["finetune"]] == [4]
    dense = json.loads((out / "dense" / "lenet300-seed0" / "run.json").read_text())
    assert dense["train_steps"] == 6 and dense["config"]["train"]["steps"] == 6
