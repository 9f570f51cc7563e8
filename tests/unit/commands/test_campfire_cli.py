"""Campfire end to end on the synthetic dataset: train/prune from the CLI, packed export, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from secateurs.api import RunOptions, train_run
from secateurs.cli import main
from secateurs.config import DataConfig, MeasureConfig, RobustnessConfig, TrainConfig
from secateurs.deploy.export_packed import bit_identical, read_packed
from secateurs.runs.directory import load_run
from secateurs.sparsity.masks import plain_state_dict

TINY = ["--data", "synthetic", "--train-subset", "256", "--no-latency"]


def run_json(path: Path) -> dict:
    return json.loads((path / "run.json").read_text())


def test_train_with_campfire_prunes_while_training_and_exports_packed(tmp_path: Path) -> None:
    out = tmp_path / "window"
    argv = ["train", "--model", "cnn-bn5", "--epochs", "1", "--batch-size", "32", *TINY, "--out", str(out)]
    argv += ["--method", "campfire", "--granularity", "window", "--sparsity", "0.667"]
    argv += ["--option", "end_epoch=0.5", "--option", "every=2"]
    assert main(argv) == 0
    info = run_json(out)
    assert info["config"]["method"]["granularity"] == "window"
    method = info["method_info"]
    # 256 images / 32 per batch = 8 steps per epoch: pruning from step 0 to step 4, updates at 0, 2, 4.
    assert method["schedule"] == {"initial": 0.0, "final": 0.667, "start_step": 0, "end_step": 4, "every": 2}
    assert method["frozen"] and method["updates"] == 3
    assert set(method["layers"]) == {
        "features.3.weight",
        "features.7.weight",
        "features.10.weight",
        "features.14.weight",
    }
    for layer in method["layers"].values():
        assert layer["sparsity"] == pytest.approx(6 / 9) and layer["final_sparsity"] == pytest.approx(6 / 9)
    epochs = info["history"]["train"]
    assert epochs[-1]["masks_frozen"] and epochs[-1]["sparsity"] == pytest.approx(6 / 9)
    assert method["storage"]["packed_bytes"] < method["storage"]["csr_bytes"] < method["storage"]["dense_bytes"]

    run = load_run(out)
    assert run.masks is not None
    for name, mask in run.masks.items():
        assert torch.count_nonzero(run.masks.original(name)[~mask]) == 0

    packed = tmp_path / "window.packed"
    assert main(["export", str(out), "--format", "packed", "--out", str(packed)]) == 0
    state, masks, header = read_packed(packed)
    assert header["bytes"]["packed_bytes"] == method["storage"]["packed_bytes"]
    reference = plain_state_dict(run.model)
    for name, value in reference.items():
        assert bit_identical(value, state[name], masks.get(name)), name
    assert {n: d["encoding"] for n, d in header["tensors"].items() if d["encoding"] != "dense"} == dict.fromkeys(
        method["layers"], "window_kernel"
    )


def test_prune_with_campfire_trains_for_the_finetuning_budget(tmp_path: Path) -> None:
    dense = tmp_path / "dense"
    common = [*TINY, "--seed", "1"]
    assert (
        main(["train", "--model", "cnn-bn5", "--epochs", "0.5", "--batch-size", "32", *common, "--out", str(dense)])
        == 0
    )
    out = tmp_path / "kernel"
    argv = ["prune", "--from", str(dense), "--method", "campfire", "--granularity", "kernel", "--sparsity", "0.5"]
    argv += ["--finetune-epochs", "1", "--finetune-batch-size", "32", "--option", "end=0.5", *common, "--out", str(out)]
    assert main(argv) == 0
    info = run_json(out)
    assert info["train_epochs"] == 1.0
    assert info["method_info"]["schedule"]["end_step"] == 4
    assert info["method_info"]["sparsity_pruned_layers"] == pytest.approx(0.5)
    assert len(info["history"]["method"]) == 1 and info["history"]["finetune"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "magnitude", "--sparsity", "0.5"], "gradual method"),
        (["--method", "campfire"], "needs both --method"),
        (["--method", "campfire", "--sparsity", "0.5", "--option", "end_epoch=3"], r"accepted: end_epoch ≤ 1"),
        (["--method", "campfire", "--sparsity", "0.5", "--granularity", "5:4"], "1 ≤ N ≤ M"),
        (["--method", "campfire", "--sparsity", "0.5", "--option", "every=0"], "every"),
        (["--method", "campfire", "--sparsity", "0.97", "--granularity", "window"], r"accepted: \[0, 0.9444\)"),
        (["--method", "campfire", "--sparsity", "0.5", "--option", "start=0.6", "--option", "end=0.5"], "start < end"),
        (
            ["--method", "campfire", "--sparsity", "0.5", "--granularity", "window", "--option", "skip_last=false"],
            "N:M",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "bad"
    argv = ["train", "--model", "cnn-bn5", "--epochs", "1", "--batch-size", "32", *TINY, "--out", str(out), *extra]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("secateurs: error:")
    assert re.search(message, error), error
    assert not out.exists() and not any(tmp_path.glob(".bad.partial"))


def test_prune_with_a_gradual_method_needs_a_training_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dense = tmp_path / "dense"
    assert main(["train", "--model", "lenet300", "--epochs", "0.25", *TINY, "--out", str(dense)]) == 0
    argv = ["prune", "--from", str(dense), "--method", "gmp", "--sparsity", "0.5", "--out", str(tmp_path / "g")]
    assert main(argv) == 2
    assert "--finetune-epochs" in capsys.readouterr().err


def test_train_run_reports_robustness_when_asked(tmp_path: Path) -> None:
    robustness = RobustnessConfig(examples=64, epsilons=(0.0, 0.05), pgd_steps=2, batch_size=32)
    info = train_run(
        "lenet300",
        DataConfig(name="synthetic"),
        TrainConfig(epochs=0.5, batch_size=32, train_subset=256),
        seed=0,
        options=RunOptions(out=tmp_path / "r", measure=MeasureConfig(latency=False, robustness=robustness)),
    )
    result = info.metrics.robustness
    assert result is not None and result.fgsm is not None and result.pgd is not None
    assert result.examples == 64 and result.split == "test"
    assert result.fgsm["0"] == result.pgd["0"] == result.clean
    assert result.pgd["0.05"] <= result.clean
