"""One suite's units of work: a dense model per (model, seed), and a pruned cell from it.

`ensure_dense` trains (or reuses, or resumes) ``DIR/dense/MODEL-seedN``; `run_cell` prunes and
fine-tunes one cell from it and returns its `ResultRow`, checkpointing into ``DIR/cells/KEY`` so an
interrupted cell resumes; `check_cells` refuses a grid its methods cannot run before anything trains.
A cell kept with ``keep_runs: true`` is also a run directory ``DIR/runs/KEY`` whose run.json is a
`RunRecord` with a ``bench`` section (the row's key and coordinates).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from secateurs.api import RunOptions, build_context, build_initialized, prune_and_finetune, runlog, train_run
from secateurs.api.runs import PrunedModel
from secateurs.bench.results import ResultRow
from secateurs.bench.suite import Cell, ModelEntry, Suite, method_levels, training_budget
from secateurs.data.types import Splits
from secateurs.errors import ConfigError, UsageError
from secateurs.io.paths import safe_child
from secateurs.methods import METHODS
from secateurs.models import build_model
from secateurs.runs.directory import LoadedRun, is_run_dir, load_run, read_run, writing_run
from secateurs.runs.record import BenchCell, History, Metrics, RunConfig, RunRecord, Timings

log = logging.getLogger(__name__)


def dense_dir(out: Path, model: ModelEntry, seed: int) -> Path:
    return safe_child(out / "dense", f"{model.row_name}-seed{seed}", "model name")


def ensure_dense(suite: Suite, out: Path, model: ModelEntry, seed: int, splits: Splits, progress: bool) -> Path:
    """The finished dense run for (model, seed): reused if present, trained (or resumed) otherwise."""
    path = dense_dir(out, model, seed)
    if not is_run_dir(path):
        log.info("training dense %s (seed %d)", model.row_name, seed)
        train_run(
            model.reference,
            suite.data,
            model.train,
            seed=seed,
            options=RunOptions(
                out=path,
                resume=True,
                progress=progress,
                measure=suite.measure,
                invocation=f"bench suite {suite.name!r}: the dense {model.row_name}, seed {seed}",
            ),
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
            model = build_model(entry.reference, splits.dataset.input_shape, splits.dataset.num_classes)
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
                raise ConfigError(f"{where or f'suite {suite.name!r}'}: model {entry.row_name!r}: {error}") from None


def dense_row(suite: Suite, model: ModelEntry, seed: int, path: Path) -> ResultRow:
    """The row of the dense run at ``path`` (its accuracies stand for both before and after fine-tuning)."""
    record = read_run(path)
    metrics = record.metrics
    return ResultRow(
        key=f"{model.row_name}|dense|0|{seed}",
        suite=suite.name,
        model=model.row_name,
        method="dense",
        label="dense",
        sparsity=0.0,
        seed=seed,
        metrics=metrics,
        metrics_before_finetune=Metrics(val_accuracy=metrics.val_accuracy, test_accuracy=metrics.test_accuracy),
        train_epochs=float(model.train.epochs) if model.train.epochs is not None else record.train_epochs,
        timings=record.timings,
        run=str(path),
    )


def run_cell(suite: Suite, out: Path, cell: Cell, splits: Splits, progress: bool) -> ResultRow:
    """Prune and fine-tune one cell from its dense model; returns its result row.

    Writes (and removes) the cell's checkpoints under ``out/cells``; with ``keep_runs`` the pruned
    model is kept as the run directory ``out/runs/KEY`` (its path is the row's ``run``).
    """
    started = time.perf_counter()
    parent = load_run(dense_dir(out, cell.model, cell.seed))
    prune = cell.prune_config()
    finetune = training_budget(suite, cell.model, cell.method)
    start = parent.model
    if cell.method.start == "init":  # the dense run's own starting weights (same seed, same init)
        start = build_initialized(cell.model.reference, splits, cell.model.train.init, cell.seed)
    measure = suite.measure
    if cell.method.bn_recalibrate is not None:
        measure = measure.model_copy(update={"bn_recalibrate": cell.method.bn_recalibrate})
    # The cell's checkpoints (fine-tuning epochs, IMP/InfCoP rounds, gradual training): a killed suite
    # resumes an interrupted cell where it stopped, not from its start. Removed once the row exists.
    work = safe_child(out / "cells", cell.key.replace("|", "_"), "cell name")
    resumed = work.is_dir() and any(work.iterdir())
    result = prune_and_finetune(
        start,
        cell.model.reference,
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
    timings = Timings(
        wall_s=time.perf_counter() - started,
        score_s=result.pruning.score_seconds,
        finetune_s=result.finetune_seconds,
        resumed=True if resumed else None,  # the timings cover this invocation only
    )
    row = ResultRow(
        key=cell.key,
        suite=suite.name,
        model=cell.model.row_name,
        method=cell.method.name,
        label=cell.method.row_name,
        sparsity=cell.sparsity,
        seed=cell.seed,
        config=prune.model_dump(mode="json"),
        metrics=result.metrics,
        metrics_before_finetune=result.metrics_before_finetune,
        train_epochs=result.train_epochs,
        method_info=result.pruning.info,
        history=History(method=result.pruning.history, finetune=result.finetune_history),
        timings=timings,
    )
    if cell.rounds is not None:
        protocol = result.pruning.info.get("protocol", {})
        target = protocol.get("target_sparsity", result.metrics.sparsity_prunable)
        rates = [float(rate) for rate in cell.rates] if cell.rates is not None else None
        row = row.model_copy(update={"sparsity": float(target), "round": cell.rounds, "rates": rates})
    if suite.keep_runs:
        run_path = safe_child(out / "runs", cell.key.replace("|", "_"), "cell name")
        keep_run(run_path, suite, cell, parent, result, row)
        row = row.model_copy(update={"run": str(run_path)})
    shutil.rmtree(work, ignore_errors=True)
    return row


def keep_run(path: Path, suite: Suite, cell: Cell, parent: LoadedRun, result: PrunedModel, row: ResultRow) -> None:
    """Write the cell's pruned model as the run directory ``path`` (replacing one there); log.txt tells it."""
    finetune = training_budget(suite, cell.model, cell.method)
    config = RunConfig.model_validate(
        {
            "data": suite.data.model_dump(mode="json"),
            "model": cell.model.name,
            "model_args": cell.model.args or None,
            "method": row.config,
            "finetune": finetune.model_dump(mode="json") if finetune is not None else None,
            "calibration": suite.calibration.model_dump(mode="json"),
            "measure": suite.measure.model_dump(mode="json"),
        }
    )
    record = RunRecord(
        kind="prune",
        parent=str(parent.path),
        seed=cell.seed,
        config=config,
        model=parent.record.model,
        preprocessing=parent.record.preprocessing,
        metrics=row.metrics,
        metrics_before_finetune=row.metrics_before_finetune,
        method_info=row.method_info,
        history=row.history or History(),
        train_epochs=row.train_epochs,
        timings=row.timings,
        bench=BenchCell(
            key=row.key, suite=row.suite, label=row.label, sparsity=row.sparsity, round=row.round, rates=row.rates
        ),
    )
    with writing_run(path, overwrite=True) as stage:
        runlog.emit(runlog.command_section(f"bench suite {suite.name!r}, cell {cell.key}"))
        runlog.emit(runlog.config_section(config))
        runlog.emit(runlog.method_section(result.pruning, METHODS.get(cell.method.name)))
        runlog.emit(runlog.before_finetune_section(result.metrics_before_finetune))
        runlog.emit(runlog.metrics_section(result.metrics))
        runlog.emit(runlog.timings_section(row.timings))
        stage.save_model(result.model)
        stage.save_masks(result.pruning.masks)
        stage.save_plan(result.pruning.plan)
        stage.commit(record)
