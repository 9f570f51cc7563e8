"""One suite's units of work: a dense model per (model, seed), and a pruned cell from it.

`ensure_dense` trains (or reuses, or resumes) ``DIR/dense/MODEL-seedN``; `run_cell` prunes and
fine-tunes one cell from it and returns its result row, checkpointing into ``DIR/cells/KEY`` so an
interrupted cell resumes; `check_cells` refuses a grid its methods cannot run before anything trains.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from secateurs.api import RunOptions, build_context, build_initialized, prune_and_finetune, train_run
from secateurs.bench.suite import Cell, ModelEntry, Suite, method_levels, training_budget
from secateurs.data.types import Splits
from secateurs.errors import ConfigError, UsageError
from secateurs.io.paths import safe_child
from secateurs.methods import METHODS
from secateurs.models import build_model
from secateurs.runs.directory import is_run_dir, load_run, read_run, writing_run

log = logging.getLogger(__name__)


def dense_dir(out: Path, model: ModelEntry, seed: int) -> Path:
    return safe_child(out / "dense", f"{model.name}-seed{seed}", "model name")


def ensure_dense(suite: Suite, out: Path, model: ModelEntry, seed: int, splits: Splits, progress: bool) -> Path:
    """The finished dense run for (model, seed): reused if present, trained (or resumed) otherwise."""
    path = dense_dir(out, model, seed)
    if not is_run_dir(path):
        log.info("training dense %s (seed %d)", model.name, seed)
        train_run(
            model.name,
            suite.data,
            model.train,
            seed=seed,
            options=RunOptions(out=path, resume=True, progress=progress, measure=suite.measure),
            splits=splits,
        )
    return path


def check_cells(suite: Suite, splits: Splits, where: str | None = None) -> None:
    """Refuse, before the first dense model trains, a (model, method) pair its method cannot run.

    `load_suite` checks what needs no data; this builds each model for the data's shapes and asks every
    method (`Method.check`) with the budget its cells will get: e.g. a flow subset larger than the
    validation split, or a model with fewer than two flow layers. A refusal is a `ConfigError` naming both,
    after ``where`` (default: the suite's name).
    """
    example = torch.zeros(1, *splits.dataset.input_shape)
    for entry in suite.models:
        with torch.random.fork_rng():  # the dense runs seed themselves; leave the global generator as it was
            model = build_model(entry.name, splits.dataset.input_shape, splits.dataset.num_classes)
        for method in suite.methods:
            implementation = METHODS.get(method.name)
            levels = method_levels(suite, method)
            if not levels:
                continue
            sparsity, rates, rounds = levels[0]
            context = build_context(
                implementation,
                example_inputs=example,
                splits=splits,
                train_config=training_budget(suite, entry, method),
            )
            try:
                implementation.check(
                    model,
                    method.prune_config(sparsity, rates, rounds or 1),
                    implementation.parse_options(method.options),
                    context,
                )
            except UsageError as error:
                raise ConfigError(f"{where or f'suite {suite.name!r}'}: model {entry.name!r}: {error}") from None


def dense_row(suite: Suite, model: ModelEntry, seed: int, path: Path) -> dict[str, Any]:
    info = read_run(path)
    return {
        "key": f"{model.name}|dense|0|{seed}",
        "suite": suite.name,
        "model": model.name,
        "method": "dense",
        "label": "dense",
        "sparsity": 0.0,
        "seed": seed,
        "metrics": info["metrics"],
        "before_finetune": {k: info["metrics"].get(k) for k in ("val_accuracy", "test_accuracy")},
        "train_epochs": model.train.epochs if model.train.epochs is not None else info.get("train_epochs"),
        "timings": info["timings"],
        "run": str(path),
    }


def run_cell(suite: Suite, out: Path, cell: Cell, splits: Splits, progress: bool) -> dict[str, Any]:
    """Prune and fine-tune one cell from its dense model; returns its result row."""
    started = time.perf_counter()
    parent = load_run(dense_dir(out, cell.model, cell.seed))
    prune = cell.prune_config()
    finetune = training_budget(suite, cell.model, cell.method)
    start = parent.model
    if cell.method.start == "init":  # the dense run's own starting weights (same seed, same init)
        start = build_initialized(cell.model.name, splits, cell.model.train.init, cell.seed)
    measure = suite.measure
    if cell.method.bn_recalibrate is not None:
        measure = measure.model_copy(update={"bn_recalibrate": cell.method.bn_recalibrate})
    # The cell's checkpoints (fine-tuning epochs, IMP/InfCoP rounds, gradual training): a killed suite
    # resumes an interrupted cell where it stopped, not from its start. Removed once the row exists.
    work = safe_child(out / "cells", cell.key.replace("|", "_"), "cell name")
    resumed = work.is_dir() and any(work.iterdir())
    result = prune_and_finetune(
        start,
        cell.model.name,
        splits,
        prune,
        finetune,
        seed=cell.seed,
        calibration=suite.calibration,
        measure=measure,
        progress=False,
        checkpoint_dir=work,
        resume=True,
    )
    timings: dict[str, Any] = {
        "wall_s": time.perf_counter() - started,
        "score_s": result.pruning.score_seconds,
        "finetune_s": result.finetune_seconds,
    }
    if resumed:  # the timings cover this invocation only
        timings["resumed"] = True
    row = {
        "key": cell.key,
        "suite": suite.name,
        "model": cell.model.name,
        "method": cell.method.name,
        "label": cell.method.row_name,
        "sparsity": cell.sparsity,
        "seed": cell.seed,
        "config": prune.model_dump(),
        "metrics": result.metrics,
        "before_finetune": result.before_finetune,
        "train_epochs": result.train_epochs,
        "method_info": result.pruning.info,
        "history": {"method": result.pruning.history, "finetune": result.finetune_history},
        "timings": timings,
    }
    if cell.rounds is not None:
        protocol = result.pruning.info.get("protocol", {})
        target = protocol.get("target_sparsity", result.metrics.get("sparsity_prunable"))
        row.update(sparsity=target, round=cell.rounds, rates=cell.rates)
    if suite.keep_runs:
        run_path = safe_child(out / "runs", cell.key.replace("|", "_"), "cell name")
        with writing_run(run_path, overwrite=True) as stage:
            stage.save_model(result.model)
            stage.save_masks(result.pruning.masks)
            stage.save_plan(result.pruning.plan)
            stage.commit(
                {
                    **row,
                    "kind": "prune",
                    "model": parent.info["model"],
                    "parent": str(parent.path),
                    "preprocessing": parent.info["preprocessing"],
                }
            )
        row["run"] = str(run_path)
    shutil.rmtree(work, ignore_errors=True)
    return row
