"""Run-directory workflows shared by the CLI, recipes and the bench runner.

`train_run` trains a zoo or external model (`secateurs.models.external`) from scratch; `prune_run`
prunes a finished run and fine-tunes it; `evaluate_run` re-measures a finished run. Each writes (or
reads) one run directory as described in ARCHITECTURE.md: `train_run` and `prune_run` return its
run.json as a `RunRecord`, and tell the run in its log.txt (`secateurs.api.runlog`: the command, the
resolved config, data and model, what the method did, the metrics before and after fine-tuning, the
timings and the files written).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.api import runlog
from secateurs.api.measure import accuracy_metrics, calibration_batches, measure_model, reference_size
from secateurs.api.pruning import PruneResult, prune
from secateurs.api.training import resolve_initialized
from secateurs.config import CalibrationConfig, DataConfig, MeasureConfig, PruneConfig, TrainConfig
from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.registry import load_data
from secateurs.data.types import Splits, split_validation
from secateurs.errors import RunDirError, UsageError
from secateurs.methods import METHODS
from secateurs.methods.gradual import GradualMethod, gradual_info
from secateurs.metrics.counts import size_report
from secateurs.models import ModelReference, Provenance, as_reference
from secateurs.runs.directory import LoadedRun, load_run, recorded_normalization, spec_of
from secateurs.runs.distributed import writing_run_on
from secateurs.runs.record import (
    History,
    Metrics,
    ModelSpec,
    Preprocessing,
    RunConfig,
    RunRecord,
    SplitRecord,
    Timings,
)
from secateurs.runtime import distributed
from secateurs.training import consistency
from secateurs.training.batchnorm import recalibrate_batchnorm_
from secateurs.training.loop import Callback, Trainer, epoch_steps, has_conv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """Where and how a workflow writes its run directory."""

    out: Path
    overwrite: bool = False
    resume: bool = False
    progress: bool = False
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    invocation: str | None = None
    """The command line that started the run (the CLI sets it); None: log.txt names the Python call."""


def load_splits(data: DataConfig) -> Splits:
    """Load ``data`` and carve its validation split (``data.split`` with ``data.split_seed``)."""
    return split_validation(load_data(data), data.split, data.split_seed)


def model_spec(name: str | ModelReference, splits: Splits, built: Provenance | None = None) -> ModelSpec:
    """What `load_run` rebuilds for the model ``name`` (with its args) trained on ``splits``, built with
    provenance ``built`` (an external model's file hash or timm version)."""
    dataset = splits.dataset
    return spec_of(as_reference(name), built or Provenance(), dataset.input_shape, dataset.num_classes)


def preprocessing(splits: Splits) -> Preprocessing:
    """The input scaling of ``splits``' dataset, as run.json records it (with what decoding files did)."""
    dataset = splits.dataset
    return Preprocessing(
        dataset=dataset.name,
        input_shape=list(dataset.input_shape),
        mean=[float(value) for value in dataset.mean],
        std=[float(value) for value in dataset.std],
        scale="x / 255, then (x - mean) / std per channel",
        classes=list(dataset.classes) if dataset.classes is not None else None,
        **dataset.preprocessing,
    )


def _invocation(options: RunOptions, call: str) -> str:
    return options.invocation or f"Python API: {call}"


def split_record(splits: Splits) -> SplitRecord | None:
    """run.json's ``split``: kind, seed, sizes and class histograms of the train and validation splits."""
    return SplitRecord.model_validate(splits.info.to_dict()) if splits.info is not None else None


def train_run(
    model_name: str | ModelReference,
    data: DataConfig,
    train: TrainConfig,
    *,
    seed: int,
    options: RunOptions,
    splits: Splits | None = None,
    callbacks: Sequence[Callback] = (),
    recipe: dict[str, Any] | None = None,
    gradual: PruneConfig | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Train ``model_name`` from scratch into the run directory ``options.out``; returns its record.

    ``model_name`` is a zoo name, an external reference (``timm:NAME``, ``python:module:factory``,
    ``FILE.py:factory``) or a `ModelReference`; ``model_args`` go to an external model's factory. The
    model is built (and an external one checked) before anything is written; run.json's ``model``
    records the reference, its args and provenance so `load_run` rebuilds it. With ``gradual`` (a
    gradual method's config, e.g. campfire) the method prunes while the model trains: its callback and
    mask store join the trainer and the run saves masks.safetensors. ``recipe`` (the recipe that asked
    for the run, as resolved) is recorded as is. Under torchrun the ranks train data-parallel and
    rank 0 alone writes (and measures) the run.
    """
    reference = as_reference(model_name)
    if model_args is not None:
        reference = dataclasses.replace(reference, args=dict(model_args))
    name = reference.name
    splits = splits or load_splits(data)
    started = time.perf_counter()
    method = _gradual_method(gradual)
    world = distributed.current_world()
    config = RunConfig.model_validate(
        {
            "data": data.model_dump(mode="json"),
            "model": name,
            "model_args": dict(reference.args) or None,
            "train": train.model_dump(mode="json"),
            "method": gradual.model_dump(mode="json") if gradual is not None else None,
        }
    )
    built = resolve_initialized(reference, splits, train.init, seed)
    model, spec = built.module, model_spec(reference, splits, built.provenance)
    with writing_run_on(world, options.out, overwrite=options.overwrite, resume=options.resume) as stage:
        runlog.emit(runlog.command_section(_invocation(options, f"train_run({name!r}, out={str(options.out)!r})")))
        runlog.emit(runlog.config_section(config))
        runlog.emit(runlog.data_section(splits))
        dense = size_report(model, splits.dataset.input_shape)
        runlog.emit(runlog.model_section(runlog.model_label(spec), dense))
        pruning = None
        if method is not None and gradual is not None:
            pruning = method.callback(model, gradual, method.parse_options(gradual.options))
        trainer = Trainer(
            model,
            splits,
            train,
            seed=seed,
            masks=pruning.masks if pruning is not None else None,
            callbacks=[pruning, *callbacks] if pruning is not None else callbacks,
            checkpoint_dir=stage.checkpoint_dir,
            progress=options.progress and world.is_main,
            **distributed.trainer_options(world),
        )
        summary = trainer.fit(resume=stage.resumed)
        model.cpu()
        masks = trainer.masks
        runlog.emit(runlog.training_section(summary.epochs, summary.stop_reason, summary.train_seconds))
        method_info = gradual_info(model, pruning) if pruning is not None else None
        if method_info is not None and gradual is not None:
            runlog.emit(runlog.gradual_section(gradual, method_info))
        metrics = (
            measure_model(
                model,
                splits,
                trainer.normalization,
                dense=dense,
                measure=options.measure,
                eval_subset=train.eval_subset,
            )
            if world.is_main
            else Metrics()
        )
        runlog.emit(runlog.metrics_section(metrics))
        stage.save_model(model)
        stage.save_masks(masks)
        timings = Timings(wall_s=time.perf_counter() - started, train_s=summary.train_seconds)
        runlog.emit(runlog.timings_section(timings))
        record = RunRecord(
            kind="train",
            parent=None,
            seed=seed,
            config=config,
            model=spec,
            preprocessing=preprocessing(splits),
            split=split_record(splits),
            metrics=metrics,
            history=History(train=summary.history),
            stop_reason=summary.stop_reason,
            method_info=method_info,
            train_epochs=summary.epochs,
            train_steps=summary.steps,
            timings=timings,
            recipe=recipe,
        )
        return stage.commit(record)


def _gradual_method(config: PruneConfig | None) -> GradualMethod | None:
    """The gradual method of ``config`` (None without one); any other kind is a `UsageError`."""
    if config is None:
        return None
    method = METHODS.get(config.method)
    if not isinstance(method, GradualMethod):
        accepted = ", ".join(name for name, m in METHODS.items() if isinstance(m, GradualMethod))
        raise UsageError(
            f"training from scratch can only prune with a gradual method; {config.method!r} is "
            f"{method.kind} (accepted: {accepted}; prune a finished run with `secateurs prune` instead)"
        )
    method.parse_options(config.options)
    return method


def _data_of(parent: LoadedRun, data_dir: str | None) -> DataConfig:
    """The data ``parent`` was trained on (its split too: `DataConfig.from_record`)."""
    recorded = parent.record.config.data
    return DataConfig.from_record(
        recorded.model_dump(mode="json") if recorded is not None else None, data_dir, str(parent.path)
    )


@dataclass
class PrunedModel:
    """A pruned (and fine-tuned) model with everything measured about it."""

    model: nn.Module
    pruning: PruneResult
    metrics_before_finetune: Metrics
    metrics: Metrics
    finetune_history: list[dict[str, Any]]
    finetune_seconds: float
    train_epochs: float
    train_steps: int = 0
    """``train_epochs`` in optimizer steps of the fine-tuning batch size."""


def prune_and_finetune(
    model: nn.Module,
    model_name: str | ModelReference,
    splits: Splits,
    config: PruneConfig,
    finetune: TrainConfig | None,
    *,
    seed: int,
    calibration: CalibrationConfig,
    measure: MeasureConfig,
    progress: bool = False,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> PrunedModel:
    """Prune ``model`` (mutated; a structured method may return a new module), fine-tune, measure.

    ``model_name`` (a zoo name or a `ModelReference`) builds the unpruned model every sparsity is
    measured against.

    Methods that train while they prune (iterative, gradual) receive ``finetune`` as their training
    budget instead of a separate fine-tuning phase. Under torchrun the masks (or plan) are made
    identical on every rank after pruning, fine-tuning is data-parallel, the masks are checked again
    before they are returned, and only rank 0 measures (the others return empty metrics). Logs the
    method, before-fine-tuning, fine-tuning and metrics sections of log.txt (`secateurs.api.runlog`).
    """
    world = distributed.current_world()
    method = METHODS.get(config.method)
    normalization = Normalization(splits.dataset.mean, splits.dataset.std)
    eval_subset = finetune.eval_subset if finetune is not None else None
    batches = calibration_batches(splits, normalization, calibration, model)
    outcome = prune(
        model,
        config,
        example_inputs=batches[0][0][:2].contiguous(),
        data=batches,
        seed=seed,
        splits=splits,
        train_config=finetune,
        progress=progress,
        checkpoint_dir=checkpoint_dir / "method" if checkpoint_dir is not None else None,
        dense=reference_size(model_name, splits),
    )
    model = outcome.model
    runlog.emit(runlog.method_section(outcome, method))
    if world.distributed:
        consistency.synchronize_masks_(outcome.masks, world)
        plan = outcome.plan.to_json() if outcome.plan is not None else None
        consistency.check_identical_json(plan, "pruning plans", world)
    if measure.bn_recalibrate:
        train_batches = BatchLoader(splits.train, 256, normalization, channels_last=has_conv(model))
        recalibrate_batchnorm_(model, _take(train_batches, measure.bn_batches))
    before = accuracy_metrics(model, splits, normalization, eval_subset) if world.is_main else Metrics()
    runlog.emit(runlog.before_finetune_section(before))
    history: list[dict[str, Any]] = []
    seconds = 0.0
    if finetune is not None and not method.trains and finetune.has_budget:
        trainer = Trainer(
            model,
            splits,
            finetune,
            seed=seed,
            masks=outcome.masks,
            checkpoint_dir=checkpoint_dir / "finetune" if checkpoint_dir is not None else None,
            progress=progress and world.is_main,
            **distributed.trainer_options(world),
        )
        summary = trainer.fit(resume=resume)
        history, seconds = summary.history, summary.train_seconds
        model.cpu()
    runlog.emit(runlog.finetune_section(finetune, method.trains, config.method, seconds))
    if world.distributed and outcome.masks is not None:
        consistency.check_identical(outcome.masks.state_dict(), "masks after fine-tuning", world)
    metrics = (
        measure_model(
            model,
            splits,
            normalization,
            dense=outcome.dense,
            measure=measure,
            eval_subset=eval_subset,
        )
        if world.is_main
        else Metrics()
    )
    runlog.emit(runlog.metrics_section(metrics))
    steps_per_epoch = epoch_steps(splits, finetune)[0] if finetune is not None else 1
    extra_epochs = finetune.budget_epochs(steps_per_epoch) if finetune is not None and not method.trains else 0.0
    train_epochs = outcome.train_epochs + extra_epochs
    return PrunedModel(
        model=model,
        pruning=outcome,
        metrics_before_finetune=before,
        metrics=metrics,
        finetune_history=history,
        finetune_seconds=seconds,
        train_epochs=train_epochs,
        train_steps=round(train_epochs * steps_per_epoch),
    )


def prune_run(
    source: Path,
    config: PruneConfig,
    finetune: TrainConfig | None,
    *,
    seed: int,
    options: RunOptions,
    calibration: CalibrationConfig | None = None,
    data_dir: str | None = None,
    splits: Splits | None = None,
    allow_changed_model: bool = False,
) -> RunRecord:
    """Prune the finished run ``source``, fine-tune, measure, and write the run directory ``options.out``.

    Returns the new run's record; ``source`` is only read. An external model is rebuilt from its
    recorded reference (`load_run`; ``allow_changed_model`` accepts a model file whose hash changed,
    the new run then records the new hash).
    """
    calibration = calibration or CalibrationConfig()
    started = time.perf_counter()
    METHODS.get(config.method).parse_options(config.options)  # fail on bad options before any work
    parent = load_run(Path(source), allow_changed_model=allow_changed_model)
    data = _data_of(parent, data_dir)
    splits = splits or load_splits(data)
    reference = rebuilt_reference(parent)
    spec = spec_of(reference, parent.provenance, parent.record.model.input_shape, parent.record.model.num_classes)
    if tuple(spec.input_shape) != splits.dataset.input_shape:
        raise RunDirError(
            f"{source} was trained on inputs {tuple(spec.input_shape)}, the data has {splits.dataset.input_shape}"
        )
    run_config = RunConfig.model_validate(
        {
            "data": data.model_dump(mode="json"),
            "model": spec.name,
            "model_args": spec.args,
            "method": config.model_dump(mode="json"),
            "finetune": finetune.model_dump(mode="json") if finetune is not None else None,
            "calibration": calibration.model_dump(mode="json"),
            "measure": options.measure.model_dump(mode="json"),
        }
    )
    world = distributed.current_world()
    with writing_run_on(world, options.out, overwrite=options.overwrite, resume=options.resume) as stage:
        call = f"prune_run({str(source)!r}, method={config.method!r}, out={str(options.out)!r})"
        runlog.emit(runlog.command_section(_invocation(options, call)))
        runlog.emit(runlog.config_section(run_config))
        runlog.emit(runlog.data_section(splits))
        parent_size = size_report(parent.model, splits.dataset.input_shape)
        runlog.emit(runlog.model_section(runlog.model_label(spec), parent_size, parent.record, str(source)))
        result = prune_and_finetune(
            parent.model,
            reference,
            splits,
            config,
            finetune,
            seed=seed,
            calibration=calibration,
            measure=options.measure,
            progress=options.progress,
            checkpoint_dir=stage.checkpoint_dir,
            resume=stage.resumed,
        )
        stage.save_model(result.model)
        stage.save_masks(result.pruning.masks)
        stage.save_plan(result.pruning.plan)
        timings = Timings(
            wall_s=time.perf_counter() - started,
            score_s=result.pruning.score_seconds,
            prune_s=result.pruning.seconds,
            finetune_s=result.finetune_seconds,
        )
        runlog.emit(runlog.timings_section(timings))
        recorded = parent.record.metrics
        record = RunRecord(
            kind="prune",
            parent=str(Path(source)),
            seed=seed,
            config=run_config,
            model=spec,
            preprocessing=parent.record.preprocessing,
            split=split_record(splits),
            dense=Metrics(
                val_accuracy=recorded.val_accuracy,
                test_accuracy=recorded.test_accuracy,
                params=recorded.params,
                macs=recorded.macs,
            ),
            metrics=result.metrics,
            metrics_before_finetune=result.metrics_before_finetune,
            method_info=result.pruning.info,
            history=History(method=result.pruning.history, finetune=result.finetune_history),
            train_epochs=result.train_epochs,
            train_steps=result.train_steps,
            timings=timings,
        )
        return stage.commit(record)


def _take(batches: BatchLoader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    taken: list[tuple[torch.Tensor, torch.Tensor]] = []
    for batch in batches:
        if len(taken) == count:
            break
        taken.append(batch)
    return taken


def rebuilt_reference(run: LoadedRun) -> ModelReference:
    """The `ModelReference` of ``run``'s unpruned model, pinned to its provenance as `load_run` rebuilt it
    (so building it again checks against the file that was just loaded, not the recorded one)."""
    spec = run.record.model
    return ModelReference(spec.name, dict(spec.args or {}), run.provenance)


def evaluate_run(
    path: Path, *, data_dir: str | None = None, latency: bool = False, allow_changed_model: bool = False
) -> Metrics:
    """Reload a finished run and re-measure it on its own preprocessing; nothing is written.

    ``allow_changed_model``: rebuild an external model whose file changed since the run (`load_run`).
    """
    run = load_run(Path(path), allow_changed_model=allow_changed_model)
    data = _data_of(run, data_dir)
    normalization = recorded_normalization(run)
    splits = load_splits(data)
    if run.input_shape != splits.dataset.input_shape:
        raise RunDirError(f"{path} was trained on inputs {run.input_shape}, the data has {splits.dataset.input_shape}")
    reference = reference_size(rebuilt_reference(run), splits)
    return measure_model(run.model, splits, normalization, dense=reference, measure=MeasureConfig(latency=latency))
