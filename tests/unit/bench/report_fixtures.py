"""Synthetic ``results.jsonl`` rows shaped like every method's, for the report tests.

The rows are plain JSON objects in schema version 1 (``before_finetune``, no ``schema_version``),
like the committed ``results/*.jsonl``: `typed` reads them through the same migration the report does.

Accuracies follow closed formulas (`accuracy`) so tests can compute the expected aggregates by hand:
``0.90 - 0.20 · s⁴ - penalty + 0.002 · seed``. Rows mimic the bench runner's (`dense_row`,
`run_cell`) and what each method adds: LAP (extreme sparsities, per-layer counts), HAP (structured,
per-channel sensitivities with prune/implant/keep), InfCoP/IMP (per-round history with cumulative
epochs), Campfire (window granularity, per-layer counts, trains while pruning).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from secateurs.bench.results import ResultRow, parse_rows

SEEDS = (0, 1, 2)
MLP_LAYERS = {"features.0.weight": 235_200, "features.2.weight": 30_000, "classifier.weight": 1_000}
MLP_PRUNABLE = sum(MLP_LAYERS.values())
PENALTY = {"dense": 0.0, "magnitude": 0.02, "lap": 0.01, "random": 0.2, "campfire-window": 0.015}


def typed(rows: Iterable[dict[str, Any]]) -> list[ResultRow]:
    """``rows`` as `ResultRow`s, migrated as the report reads them."""
    return parse_rows(rows, "fixture")


def accuracy(sparsity: float, seed: int, penalty: float) -> float:
    return 0.90 - 0.20 * sparsity**4 - penalty + 0.002 * seed


def _metrics(test: float, sparsity: float, *, latency: bool = True, macs: int = 266_200) -> dict[str, Any]:
    kept = MLP_PRUNABLE - round(sparsity * MLP_PRUNABLE)
    metrics: dict[str, Any] = {
        "val_accuracy": test + 0.01,
        "test_accuracy": test,
        "params": 266_610,
        "nonzero_params": kept + 410,
        "prunable_params": MLP_PRUNABLE,
        "nonzero_prunable": kept,
        "macs": macs,
        "effective_macs": round(macs * (1 - sparsity)),
        "sparsity_prunable": 1 - kept / MLP_PRUNABLE,
        "sparsity_params": 1 - (kept + 410) / 266_610,
        "sparsity_macs": sparsity,
    }
    if latency:
        metrics["latency_ms"] = {"threads": 2, "batch_1": 0.05 + 0.01 * sparsity, "batch_256": 3.0 - sparsity}
    return metrics


def _layers(sparsity: float) -> dict[str, list[int]]:
    return {name: [total - round(sparsity * total), total] for name, total in MLP_LAYERS.items()}


def dense_row(model: str, seed: int) -> dict[str, Any]:
    test = accuracy(0.0, seed, 0.0)
    return {
        "key": f"{model}|dense|0|{seed}",
        "suite": "fixture",
        "model": model,
        "method": "dense",
        "label": "dense",
        "sparsity": 0.0,
        "seed": seed,
        "metrics": _metrics(test, 0.0),
        "before_finetune": {"val_accuracy": test + 0.01, "test_accuracy": test},
        "train_epochs": 5.0,
        "timings": {"wall_s": 10.0, "train_s": 9.0},
    }


def cell_row(model: str, label: str, sparsity: float, seed: int, **extra: Any) -> dict[str, Any]:
    test = accuracy(sparsity, seed, PENALTY.get(label, 0.03))
    row = {
        "key": f"{model}|{label}|{sparsity:g}|{seed}",
        "suite": "fixture",
        "model": model,
        "method": label.split("-")[0],
        "label": label,
        "sparsity": sparsity,
        "seed": seed,
        "config": {"method": label.split("-")[0], "sparsity": sparsity},
        "metrics": _metrics(test, sparsity),
        "before_finetune": {"val_accuracy": test - 0.05, "test_accuracy": test - 0.06},
        "train_epochs": 1.0,
        "method_info": {"layers": _layers(sparsity)},
        "history": {"method": [], "finetune": []},
        "timings": {"wall_s": 2.0, "score_s": 0.1, "finetune_s": 1.5},
    }
    row.update(extra)
    return row


def rounds(seed: int, count: int, epochs_per_round: float) -> list[dict[str, Any]]:
    """IMP-style rounds: 20 % of the remaining weights per round, validation accuracy slowly decaying."""
    history = []
    for index in range(1, count + 1):
        sparsity = 1 - 0.8**index
        history.append(
            {
                "round": index,
                "sparsity": sparsity,
                "cumulative_epochs": 3.0 + epochs_per_round * index,
                "val_accuracy": 0.9 - 0.01 * index + 0.002 * seed,
                "epochs": epochs_per_round,
            }
        )
    return history


CHANNELS = {"conv1.weight": [0.5, 0.01, 2.0, 0.2], "layer1.0.conv1.weight": [0.05, 3.0, 0.3, 0.002, 1.0, 0.08]}
THRESHOLDS = {"keep_above": 0.25, "implant_above": 0.06}


def hap_row(seed: int, sparsity: float = 0.5) -> dict[str, Any]:
    row = cell_row("resnet20", "hap", sparsity, seed)
    row["method_info"] = {
        "channel_scores": CHANNELS,
        "channel_thresholds": THRESHOLDS,
        "channel_decisions": {
            "conv1.weight": ["keep", "prune", "keep", "implant"],
            "layer1.0.conv1.weight": ["prune", "keep", "keep", "prune", "keep", "implant"],
        },
    }
    row["metrics"]["params"] = round(266_610 * (1 - sparsity))
    return row


def fixture_rows(seeds: tuple[int, ...] = SEEDS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        rows.append(dense_row("mlp", seed))
        for label in ("magnitude", "lap", "random"):
            for sparsity in (0.5, 0.9, 0.99, 0.999):
                rows.append(cell_row("mlp", label, sparsity, seed))
        rows.append(cell_row("mlp", "campfire-window", 0.7, seed, train_epochs=12.0))
        for label, per_round in (("infcop-if", 1.0), ("imp", 3.0)):
            for count, sparsity in ((2, 0.36), (4, 0.5904)):
                rows.append(
                    cell_row(
                        "mlp",
                        label,
                        sparsity,
                        seed,
                        history={"method": rounds(seed, count, per_round), "finetune": []},
                        train_epochs=3.0 + per_round * count,
                    )
                )
        rows.append(dense_row("resnet20", seed))
        rows.append(hap_row(seed))
    return rows


SUITE = {
    "name": "fixture",
    "description": "synthetic rows shaped like every method's",
    "seeds": list(SEEDS),
    "models": [{"name": "mlp"}, {"name": "resnet20"}],
    "methods": [{"name": "magnitude"}, {"name": "lap"}],
}


def write_bench_dir(directory: Path, rows: list[dict[str, Any]] | None = None, *, suite: bool = True) -> Path:
    """A bench output directory holding ``rows`` (the full fixture by default) and suite.json."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = fixture_rows() if rows is None else rows
    (directory / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if suite:
        (directory / "suite.json").write_text(json.dumps(SUITE))
    return directory
