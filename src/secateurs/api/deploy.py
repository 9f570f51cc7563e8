"""Exporting a run or a pruning result, and the masked equivalent of a structured result.

    import secateurs as sec
    result = sec.prune(model, method="l2-filter", sparsity=0.3, example_inputs=x)
    sec.export(result, format="onnx", path="model.onnx")          # or a run directory, or a LoadedRun
    twin = sec.masked_equivalent(result)                             # the unpruned layout, masked

`export` goes through the exporter registry of `secateurs.deploy` (``secateurs list formats``), as
``secateurs export`` does; every exporter verifies what it wrote before it is renamed into place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.api.persist import result_record
from secateurs.api.pruning import PruneResult
from secateurs.deploy.exporters import load_exporters
from secateurs.errors import UsageError
from secateurs.runs.directory import LoadedRun, load_run
from secateurs.structure.equivalent import masked_equivalent as plan_twin
from secateurs.structure.plan import Plan

TRACE_BATCH = 2
"""Batch of the zero inputs a result's model is traced with (its shape is all that matters)."""


def export(
    source: str | Path | LoadedRun | PruneResult,
    format: str = "onnx",
    path: str | Path | None = None,
    *,
    model_name: str = "custom",
    model_args: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    allow_changed_model: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Export ``source`` in ``format`` to ``path``; returns the exporter's summary with ``format`` and ``out``.

    ``source`` is a run directory (loaded with `load_run`: a zoo model or an external reference is
    rebuilt from run.json; ``allow_changed_model`` accepts a model file whose hash changed), a
    `LoadedRun`, or a `PruneResult` (its model as it is now; ``model_name``, ``model_args`` and
    ``num_classes`` say what formats that record the model, such as ``csr``, name in their header, as
    in `secateurs.api.save`). ``path`` defaults to the run directory's name with the format's suffix
    beside it (a `PruneResult` needs one). ``options`` are the format's own (validated first; unknown
    keys are a `ConfigError`). Nothing is written unless the export verifies; ``source`` is not changed.
    """
    load_exporters().get(format).parse_options(options)  # an unknown format or bad options fail first
    if isinstance(source, PruneResult):
        if path is None:
            raise UsageError("export(): a PruneResult has no run directory to write beside; pass path=")
        record = result_record(source, model_name=model_name, model_args=model_args, num_classes=num_classes)
        label = f"{source.config.method}-result"
        run = LoadedRun(
            path=Path(label),
            record=record.model_copy(update={"name": label}),
            model=source.model,
            masks=source.masks,
            plan=source.plan,
        )
    elif isinstance(source, LoadedRun):
        run = source
    else:
        run = load_run(Path(source), allow_changed_model=allow_changed_model)
    return export_loaded(run, format, path, options)


def export_loaded(run: LoadedRun, format: str, path: str | Path | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """Export the loaded ``run`` with the exporter ``format`` and its ``options`` (validated) to ``path``
    (default: beside the run directory, with the format's suffix); returns the summary with ``format``
    and ``out``."""
    exporter = load_exporters().get(format)
    settings = exporter.parse_options(options)
    out = Path(path) if path is not None else run.path.with_name(run.path.name + exporter.suffix)
    summary = exporter.export(run, out, settings)
    return {"format": exporter.name, "out": str(out), **summary}


def masked_equivalent(
    source: PruneResult | nn.Module,
    plan: Plan | Mapping[str, Any] | None = None,
    *,
    example_inputs: torch.Tensor | None = None,
) -> nn.Module:
    """The masked model equivalent to a structured plan: the physically pruned model's masked twin.

    ``source`` is a `PruneResult` of a structured method (its ``plan``, applied to the model it was
    given), or the unpruned model itself with ``plan`` (a `Plan` or a plan.json object). Returns a new
    model in the unpruned layout (eval mode) whose removed channels — their filters and every
    consumer's input slice — are masks (`secateurs.MaskStore` parametrizations), with implants as
    ``ImplantedConv2d`` layers: in eval mode it computes what the physically pruned model computes.
    ``example_inputs`` (only its shape is used to trace) defaults to zeros of the result's input shape.
    Nothing is modified. A result without a plan (a masked method's) or a plan that does not fit the
    model is a `UsageError`.
    """
    chosen: Plan | Mapping[str, Any]
    if isinstance(source, PruneResult):
        if plan is not None:
            raise UsageError("masked_equivalent(): a PruneResult carries its own plan; pass plan= with a model only")
        if source.plan is None or source.source is None:
            raise UsageError(
                f"masked_equivalent(): the result of {source.config.method!r} has no structured plan; "
                "its model is already masked (result.model, result.masks)"
            )
        model, chosen = source.source, source.plan
        shape = source.input_shape
    else:
        if plan is None or example_inputs is None:
            raise UsageError(
                "masked_equivalent(model, plan, example_inputs=x) needs the plan (result.plan or a plan.json "
                "object) and a batch to trace the model with"
            )
        model, chosen, shape = source, plan, tuple(example_inputs.shape[1:])
    if example_inputs is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        example_inputs = torch.zeros((TRACE_BATCH, *shape), device=device)
    return plan_twin(model, chosen, example_inputs)
