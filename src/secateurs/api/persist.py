"""Saving a `PruneResult` as a run directory and loading run directories back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from secateurs.api import runlog
from secateurs.api.pruning import PruneResult
from secateurs.errors import UsageError
from secateurs.methods import METHODS
from secateurs.models import EXTERNAL_FORMS, ModelReference, Provenance, is_external, resolve_model
from secateurs.runs.directory import LoadedRun, load_run, spec_of, writing_run
from secateurs.runs.record import History, Metrics, Preprocessing, RunConfig, RunRecord, Timings


def save(
    result: PruneResult,
    path: str | Path,
    *,
    model_name: str = "custom",
    model_args: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``result`` as a run directory (model.safetensors, masks/plan, run.json, log.txt); atomic.

    ``model_name`` (with ``model_args``) is what `load` and the CLI rebuild without a factory: a zoo
    name or an external reference (``timm:NAME``, ``python:module:factory``, ``FILE.py:factory``; it
    is resolved now, and its file hash or timm version recorded); ``custom`` (the default) needs a
    ``model_factory`` to load. ``num_classes`` defaults to the out_features of the model's last
    ``nn.Linear``. ``extra`` (any JSON-serialisable dict) is recorded under run.json's ``extra``.
    Returns the run directory.
    """
    out = Path(path)
    record = result_record(result, model_name=model_name, model_args=model_args, num_classes=num_classes, extra=extra)
    with writing_run(out, overwrite=overwrite) as stage:
        runlog.emit(
            runlog.command_section(
                f"Python API: secateurs.save(result of prune({result.config.method!r}), {str(out)!r})"
            )
        )
        runlog.emit(runlog.config_section(record.config))
        runlog.emit(runlog.method_section(result, METHODS.get(result.config.method)))
        runlog.emit(runlog.metrics_section(record.metrics))
        stage.save_model(result.model)
        stage.save_masks(result.masks)
        stage.save_plan(result.plan)
        stage.commit(record)
    return out


def result_record(
    result: PruneResult,
    *,
    model_name: str = "custom",
    model_args: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    extra: dict[str, Any] | None = None,
) -> RunRecord:
    """The `RunRecord` `save` writes for ``result`` (see `save` for the arguments); nothing is written.

    An external ``model_name`` is resolved (built once, on the CPU) to record its provenance and to
    check that it builds for ``result``'s input shape and class count.
    """
    input_shape = list(result.input_shape)
    classes = num_classes if num_classes is not None else _num_classes(result.model)
    if classes < 1:
        raise UsageError("save(): the model has no nn.Linear to read its class count from; pass num_classes=")
    reference = ModelReference(model_name, dict(model_args or {}))
    provenance = Provenance()
    if is_external(model_name):
        provenance = resolve_model(reference, tuple(input_shape), classes).provenance
    elif model_args:
        raise UsageError(f"save(): model_args are for external models ({EXTERNAL_FORMS}), not {model_name!r}")
    return RunRecord(
        kind="prune",
        model=spec_of(reference, provenance, input_shape, classes),
        preprocessing=Preprocessing(input_shape=input_shape),
        seed=None,
        config=RunConfig(method=result.config.model_dump(mode="json")),
        metrics=Metrics.model_validate(result.size.to_dict()),
        method_info=result.info,
        history=History(method=result.history),
        timings=Timings(score_s=result.score_seconds, prune_s=result.seconds),
        extra=extra,
    )


def load(
    path: str | Path, model_factory: Callable[[], nn.Module] | None = None, *, allow_changed_model: bool = False
) -> LoadedRun:
    """Rebuild a saved run: ``model_factory()`` (or the model run.json names: a zoo model or an external
    reference), plan replay, weights, masks. ``allow_changed_model`` accepts a model file whose hash
    changed since the run (its weights must still fit)."""
    return load_run(Path(path), model_factory, allow_changed_model=allow_changed_model)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else 0
