"""A suite whose method cannot use the training budget it would get fails when it loads (issue 6, bad input):
before any dense model trains, with one line naming the method, the model and the option, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs.bench.suite import load_suite
from secateurs.cli import main
from secateurs.errors import ConfigError

SUITE = """
name: budget
data: {{name: synthetic}}
models:
  - name: lenet300
    train: {{epochs: 0.25, batch_size: 32, train_subset: 128}}
methods:
  - {method}
sparsities: [0.5]
{finetune}
measure: {{latency: false}}
"""
FINETUNE = "finetune: {epochs: 1, batch_size: 32, train_subset: 128}"


def write(tmp_path: Path, method: str, finetune: str = FINETUNE) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(method=method, finetune=finetune))
    return path


@pytest.mark.parametrize(
    ("method", "finetune", "message"),
    [
        ("{name: infcop-gf, options: {rounds: 2, check_every: 2}}", FINETUNE,
         "model 'lenet300': method 'infcop-gf': check_every (2.0 epochs) exceeds the per-round budget (1.0 epochs)"),
        ("{name: imp, options: {rounds: 2, monitor: both, check_every: 1.5}}", FINETUNE,
         "method 'imp': check_every (1.5 epochs) exceeds"),
        ("{name: imp, options: {rounds: 2, early_round_epochs: 1.5}}", FINETUNE,
         "method 'imp': early_round_epochs (1.5) exceeds the per-round budget (1.0)"),
        ("{name: imp, options: {rounds: 2}}", "", "method 'imp' trains while it prunes: give it a training budget"),
        ("{name: gmp}", "", "method 'gmp' trains while it prunes"),
        ("{name: infcop-if, options: {rounds: 2}}", "finetune: {epochs: 0, batch_size: 32}",
         "per-round budget must be > 0 epochs"),
    ],
)  # fmt: skip
def test_bad_budgets_fail_when_the_suite_loads(tmp_path: Path, method: str, finetune: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_suite(write(tmp_path, method, finetune))
    assert message in str(error.value)


def test_good_budgets_load(tmp_path: Path) -> None:
    # IMP without flows ignores check_every; an entry's own `train:` is its budget, not the suite's finetune.
    load_suite(write(tmp_path, "{name: imp, options: {rounds: 2, check_every: 3}}"))
    load_suite(write(tmp_path, "{name: infcop-gf, options: {check_every: 2}, train: {epochs: 2, batch_size: 32}}"))
    load_suite(write(tmp_path, "{name: magnitude}", finetune=""))  # a one-shot method needs no budget


def test_bench_refuses_before_training_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["bench", str(write(tmp_path, "{name: infcop-if, options: {check_every: 4}}")), "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and "check_every (4.0 epochs) exceeds" in error
    assert not out.exists()  # no dense model trained, no results file


@pytest.mark.parametrize(
    ("method", "message"),
    [
        # the synthetic validation split holds 100 images
        ("{name: infcop-if, options: {flow_subset: 500}}",
         "model 'lenet300': flow subset must hold 2 to 100 validation images (the split's size), got 500"),
        ("{name: imp, options: {rule: sap}, scope: layerwise}", "rule 'sap' is global; scope 'layerwise'"),
        # 128 images at batch 32: 4 steps per epoch, 4 in the 1-epoch budget; end_epoch 2 is step 8
        ("{name: gmp, options: {end_epoch: 2}}", "end at step 8 (epoch 2) is past the budget of 4 steps"),
        # lenet300 is all Linear: a window (within-kernel) structure cannot cut it without a fallback
        ("{name: campfire, granularity: window}", "window granularity needs a conv weight"),
    ],
)  # fmt: skip
def test_bench_checks_each_cell_against_the_data_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str, message: str
) -> None:
    path = write(tmp_path, method)
    load_suite(path)  # nothing wrong without the data
    out = tmp_path / "out"
    code = main(["bench", str(path), "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and message in error
    assert not out.exists()
