"""Saving a `PruneResult` as a run directory and loading run directories back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from secateurs.api import runlog
from secateurs.api.pruning import PruneResult
from secateurs.errors import UsageError
from secateurs.methods import METHODS
from secateurs.runs.directory import LoadedRun, load_run, writing_run
from secateurs.runs.record import History, Metrics, ModelSpec, Preprocessing, RunConfig, RunRecord, Timings


def save(
    result: PruneResult,
    path: str | Path,
    *,
    model_name: str = "custom",
    num_classes: int | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``result`` as a run directory (model.safetensors, masks/plan, run.json, log.txt); atomic.

    ``model_name`` is what `load` rebuilds without a factory (a registry name; ``custom`` needs one);
    ``num_classes`` defaults to the out_features of the model's last ``nn.Linear``. ``extra`` (any
    JSON-serialisable dict) is recorded under run.json's ``extra``. Returns the run directory.
    """
    out = Path(path)
    input_shape = list(result.input_shape)
    classes = num_classes if num_classes is not None else _num_classes(result.model)
    if classes < 1:
        raise UsageError("save(): the model has no nn.Linear to read its class count from; pass num_classes=")
    record = RunRecord(
        kind="prune",
        model=ModelSpec(name=model_name, input_shape=input_shape, num_classes=classes),
        preprocessing=Preprocessing(input_shape=input_shape),
        seed=None,
        config=RunConfig(method=result.config.model_dump(mode="json")),
        metrics=Metrics.model_validate(result.size.to_dict()),
        method_info=result.info,
        history=History(method=result.history),
        timings=Timings(score_s=result.score_seconds, prune_s=result.seconds),
        extra=extra,
    )
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


def load(path: str | Path, model_factory: Callable[[], nn.Module] | None = None) -> LoadedRun:
    """Rebuild a saved run: ``model_factory()`` (or the registry's model), plan replay, weights, masks."""
    return load_run(Path(path), model_factory)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else 0
