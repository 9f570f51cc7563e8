"""log.txt tells the whole run: command, config, data, model, what the method did, metrics, files.

A training run, a magnitude prune with fine-tuning and an l2-filter prune without it, through the CLI
on synthetic data; every number the log states is checked against the run's own run.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from secateurs.cli import RUN_LOG, main
from secateurs.runs import directory
from secateurs.runs.directory import read_run
from secateurs.runs.record import Metrics, RunRecord

TRAIN = ["train", "--model", "lenet5", "--data", "synthetic", "--epochs", "1", "--no-latency"]
SECTION = re.compile(r"^\S+ \S+ INFO secateurs\.run: ([a-z -]+):", re.MULTILINE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("log")
    dense, magnitude, filters = root / "dense", root / "magnitude", root / "l2"
    assert main(["--threads", "1", *TRAIN, "--out", str(dense)]) == 0
    prune = ["--threads", "1", "prune", "--from", str(dense)]
    argv = [*prune, "--method", "magnitude", "--sparsity", "0.8", "--finetune-epochs", "0.5", "--no-latency"]
    assert main([*argv, "--out", str(magnitude)]) == 0
    assert main([*prune, "--method", "l2-filter", "--sparsity", "0.5", "--no-latency", "--out", str(filters)]) == 0
    return {"dense": dense, "magnitude": magnitude, "l2": filters}


def log_of(run: Path) -> tuple[str, RunRecord]:
    return (run / "log.txt").read_text(), read_run(run)


def sections(text: str) -> list[str]:
    return SECTION.findall(text)


def accuracies(metrics: Metrics) -> str:
    return (
        f"val {metrics.val_accuracy:.4f} (loss {metrics.val_loss:.4f}), "
        f"test {metrics.test_accuracy:.4f} (loss {metrics.test_loss:.4f})"
    )


def assert_metrics(text: str, metrics: Metrics) -> None:
    assert f"    accuracy: {accuracies(metrics)}\n" in text
    assert (
        f"    parameters: {metrics.params:,} ({metrics.nonzero_params:,} non-zero), "
        f"prunable {metrics.prunable_params:,} ({metrics.nonzero_prunable:,} non-zero)\n"
    ) in text
    assert f"    MACs: {metrics.macs:,} per example ({metrics.effective_macs:,} effective)\n" in text
    assert (
        f"    sparsity: {metrics.sparsity_prunable:.4f} of prunable weights, {metrics.sparsity_params:.4f} of "
        f"parameters, {metrics.sparsity_macs:.4f} of MACs\n"
    ) in text


def test_the_logger_names_agree() -> None:
    assert RUN_LOG == directory.RUN_LOG  # the CLI names it without importing torch


def test_a_training_run_logs_its_command_config_data_model_metrics_and_files(runs: dict[str, Path]) -> None:
    text, record = log_of(runs["dense"])
    names = sections(text)
    assert names == ["command", "config", "data", "model", "training", "metrics", "timings", "files"]
    assert f"command: secateurs --threads 1 {' '.join(TRAIN)} --out {runs['dense']}\n" in text
    assert "    data: name=synthetic, dir=None, split=stratified, split_seed=0," in text
    assert "    model: lenet5\n" in text
    assert "    train: epochs=1, steps=None, batch_size=128, eval_batch_size=1000, optimizer=sgd, lr=0.05," in text
    assert "data: synthetic: 1,100 train / 100 validation / 400 test images of 1×28×28, 10 classes\n" in text
    preprocessing = record.preprocessing
    assert preprocessing.mean is not None and preprocessing.std is not None
    assert f"    normalisation: mean [{preprocessing.mean[0]:.4f}], std [{preprocessing.std[0]:.4f}]" in text
    assert "model: lenet5: 61,706 parameters (61,470 prunable), 416,520 MACs per example\n" in text
    assert "epoch 1: train loss" in text.split("training:")[0]  # the trainer's epoch line precedes the summary
    assert f"training: 1 epoch in {record.timings.train_s:.3f} s, stopped: {record.stop_reason}\n" in text
    assert_metrics(text, record.metrics)
    assert f"timings: wall {record.timings.wall_s:.3f} s, train {record.timings.train_s:.3f} s\n" in text
    assert text.rstrip().endswith(f"files: {runs['dense']}/ holds log.txt, model.safetensors, run.json")


def test_a_magnitude_prune_logs_every_layer_and_both_metrics(runs: dict[str, Path]) -> None:
    text, record = log_of(runs["magnitude"])
    names = sections(text)
    assert names == [
        "command", "config", "data", "model", "method", "before fine-tuning", "fine-tuning", "metrics", "timings",
        "files",
    ]  # fmt: skip
    assert f"--method magnitude --sparsity 0.8 --finetune-epochs 0.5 --no-latency --out {runs['magnitude']}" in text
    assert "    method: method=magnitude, sparsity=0.8, scope=None, granularity=element" in text
    assert f"    parent: {runs['dense']} (train run: " in text
    assert "method: magnitude (unstructured), target 0.8 of prunable weights, scope layerwise\n" in text
    timings = record.timings
    assert f"    timings: score {timings.score_s:.3f} s, prune {timings.prune_s:.3f} s\n" in text
    assert record.method_info is not None
    layers = record.method_info["layers"]
    assert list(layers) == ["features.0.weight", "features.3.weight", "hidden.0.weight", "hidden.2.weight",
                            "classifier.weight"]  # fmt: skip
    for name, (kept, total) in layers.items():
        assert f"    layer {name}: kept {kept:,} of {total:,} ({100 * (1 - kept / total):.2f} % removed)\n" in text
    assert "    masks: 5 weights masked (masks.safetensors)\n" in text
    before = record.metrics_before_finetune
    assert before is not None and f"before fine-tuning: {accuracies(before)}\n" in text
    between = text.split("before fine-tuning:")[1].split("fine-tuning: 0.5 epochs")[0]
    assert "epoch 1: train loss" in between  # the fine-tuning's epoch line, between the two sections
    assert f"fine-tuning: 0.5 epochs in {timings.finetune_s:.3f} s\n" in text
    assert_metrics(text.split("INFO secateurs.run: metrics:")[1], record.metrics)
    assert record.metrics.sparsity_prunable == pytest.approx(0.8, abs=1e-4)
    assert text.rstrip().endswith("holds log.txt, masks.safetensors, model.safetensors, run.json")


def test_an_l2_filter_prune_without_fine_tuning_logs_groups_scores_and_the_plan(runs: dict[str, Path]) -> None:
    text, record = log_of(runs["l2"])
    names = sections(text)
    assert names == [
        "command", "config", "data", "model", "method", "before fine-tuning", "fine-tuning", "metrics", "timings",
        "files",
    ]  # fmt: skip
    assert "epoch " not in text  # nothing trained
    assert "method: l2-filter (structured), target 0.5 of params, scope layerwise\n" in text
    info = record.method_info
    assert info is not None
    realised = info["realised"]
    assert f"    allocation: params_removed={realised['params_removed']:.4f}, " in text
    removed = 0
    for root, group in info["groups"].items():
        channels, gone = group["channels"], group["removed"]
        removed += gone
        assert f"    group {root}: {channels} → {channels - gone} channels ({gone} removed, 0 implanted)\n" in text
        scores = sorted(info["channel_scores"][root])
        assert f"    scores {root}: {len(scores)} channels, min {scores[0]:.4g}, " in text
        assert f", max {scores[-1]:.4g}\n" in text
    assert removed == 69 and "    plan: 4 steps, 69 channels removed, 0 implanted (plan.json)\n" in text
    assert "    not pruned classifier: its channels reach the model output" in text
    before = record.metrics_before_finetune
    assert before is not None and f"before fine-tuning: {accuracies(before)}\n" in text
    assert "fine-tuning: none (no fine-tuning budget requested)\n" in text
    assert before.test_accuracy == record.metrics.test_accuracy  # no fine-tuning: the same model
    assert_metrics(text, record.metrics)
    assert record.metrics.params == 29_886 and "    parameters: 29,886 (29,886 non-zero)" in text
    assert text.rstrip().endswith(f"files: {runs['l2']}/ holds log.txt, model.safetensors, plan.json, run.json")


def test_the_console_shows_the_epochs_not_the_sections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["--threads", "1", *TRAIN, "--epochs", "0.25", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "epoch 1: train loss" in err and "config:" not in err and "files:" not in err
    assert "config:" in (out / "log.txt").read_text()


def test_a_recipe_and_a_kept_bench_cell_name_what_started_them(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "name": "told",
                "data": {"name": "synthetic"},
                "model": "lenet300",
                "train": {"epochs": 0.1},
                "method": {"method": "magnitude", "sparsity": 0.5},
                "measure": {"latency": False},
            }
        )
    )
    argv = ["--threads", "1", "run", str(recipe), "--out-root", str(tmp_path / "runs")]
    assert main(argv) == 0
    for run in ("dense", "pruned"):
        text = (tmp_path / "runs" / "told" / run / "log.txt").read_text()
        assert f"command: secateurs {' '.join(argv)}\n" in text
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        json.dumps(
            {
                "name": "told",
                "data": {"name": "synthetic"},
                "models": [{"name": "lenet300", "train": {"epochs": 0.1}}],
                "methods": [{"name": "magnitude"}],
                "sparsities": [0.5],
                "measure": {"latency": False},
                "keep_runs": True,
            }
        )
    )
    assert main(["--quiet", "--threads", "1", "bench", str(suite), "--out", str(tmp_path / "bench")]) == 0
    dense = (tmp_path / "bench" / "dense" / "lenet300-seed0" / "log.txt").read_text()
    assert "command: bench suite 'told': the dense lenet300, seed 0\n" in dense
    kept = tmp_path / "bench" / "runs" / "lenet300_magnitude_0.5_0"
    text, record = log_of(kept)
    assert sections(text) == ["command", "config", "method", "before fine-tuning", "metrics", "timings", "files"]
    assert "command: bench suite 'told', cell lenet300|magnitude|0.5|0\n" in text
    assert record.bench is not None and record.bench.key == "lenet300|magnitude|0.5|0"
    assert_metrics(text, record.metrics)
