"""ONNX export: ``secateurs export RUN --format onnx``.

The model that is exported is the deployable one: masks multiplied in (`baked_copy`: plain layers whose
pruned weights are zero), or the physically smaller model that plan replay rebuilt — any module the
exporter can trace, including implant modules, with no special case for any layer type.

**Which exporter.** ``torch.onnx.export(..., dynamo=True)``: the ``torch.export``-based exporter that is
the default of torch 2.13 (it needs ``onnxscript``, a declared dependency). It either captures the
whole graph or fails loudly, where the older TorchScript tracer (``dynamo=False``, deprecated and
announced for removal) silently bakes in Python control flow. It exported every model of the zoo and
matched PyTorch to about 1e-7; it is slower (seconds per model rather than a fraction of one), which
only matters for the test suite. The graph is exported at batch 2 with the batch dimension declared
dynamic (``torch.export.Dim``; an example batch of 1 would be specialised), then checked with
``onnx.checker.check_model(full_check=True)`` and run in onnxruntime at batches 1 and 3 against
PyTorch: a maximum absolute difference above `TOLERANCE` (1e-4) is an error and nothing is written.

**Preprocessing.** The graph takes the *normalised* input, exactly what the model saw in training
(pixels ÷ 255, then ``(x - mean) / std`` per channel). The run's preprocessing (mean, std, input
shape, dataset) is stored in the ONNX ``metadata_props`` (keys ``secateurs.*``, JSON values) and in
the export summary, so a deployment can apply it without the run directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from secateurs import __version__
from secateurs.deploy.exporters import ExportOptions, register_exporter
from secateurs.errors import SecateursError
from secateurs.io.files import atomic_write_bytes
from secateurs.runs.directory import LoadedRun
from secateurs.runs.record import RunRecord
from secateurs.runtime.extras import require
from secateurs.sparsity.masks import baked_copy

__all__ = [
    "CHECK_BATCHES",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TOLERANCE",
    "check_against_torch",
    "export_onnx_model",
    "onnx_bytes",
    "onnx_metadata",
    "onnxruntime_session",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXAMPLE_BATCH = 2
CHECK_BATCHES = (1, 3)
TOLERANCE = 1e-4
METADATA_PREFIX = "secateurs."


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (e.g. "torchvision is not installed") for one call."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.onnx._internal.exporter._registration")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def onnx_metadata(record: RunRecord) -> dict[str, str]:
    """``metadata_props`` for a run's record: preprocessing, model and provenance as JSON strings."""
    preprocessing = record.preprocessing
    metadata = {
        "preprocessing": json.dumps(preprocessing.to_json()),
        "mean": json.dumps(preprocessing.mean),
        "std": json.dumps(preprocessing.std),
        "input_shape": json.dumps(preprocessing.input_shape or record.model.input_shape),
        "input": (
            "float32, shape (batch, *input_shape), batch dynamic; normalised: pixels / 255, "
            "then (x - mean) / std per channel"
        ),
        "model": json.dumps(record.model.to_json()),
        "run": record.name or "",
        "version": __version__,
    }
    return {f"{METADATA_PREFIX}{key}": value for key, value in metadata.items()}


def onnx_bytes(model: nn.Module, input_shape: Sequence[int], metadata: Mapping[str, str] | None = None) -> bytes:
    """The serialised ONNX model of `model` (masks baked in) for inputs ``(batch, *input_shape)``.

    The batch axis is dynamic; the input is named `INPUT_NAME`, the output `OUTPUT_NAME`; `metadata`
    goes into ``metadata_props``. The model is checked with ``onnx.checker`` (full check). `model`
    is not changed (a baked copy in eval mode is exported). An exporter failure is a
    `SecateursError` naming the model class and the exporter's first message line.
    """
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")

    deployable = baked_copy(model).eval()
    example = torch.randn((EXAMPLE_BATCH, *input_shape), generator=torch.Generator().manual_seed(0))
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                deployable,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True,
                verbose=False,
            )
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise SecateursError(
            f"ONNX export of {type(model).__name__} failed in torch.onnx.export (dynamo): "
            f"{type(error).__name__}: {first_line}"
        ) from error
    if program is None:  # only without dynamo; kept for the type checker
        raise SecateursError(f"torch.onnx.export returned no program for {type(model).__name__}")
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    data: bytes = proto.SerializeToString()
    return data


def onnxruntime_session(model: bytes | str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session with `threads` intra-op threads, one inter-op thread, sequential execution."""
    onnxruntime = require("onnxruntime", "onnxruntime inference")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = str(model) if isinstance(model, Path) else model
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def check_against_torch(
    data: bytes, model: nn.Module, input_shape: Sequence[int], batches: Sequence[int] = CHECK_BATCHES
) -> float:
    """Largest |onnxruntime − PyTorch| over seeded random inputs at each batch size in `batches`.

    `model` is run as its baked copy in eval mode (not changed).
    """
    session = onnxruntime_session(data)
    reference = baked_copy(model).eval()
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in batches:
        x = torch.randn((batch, *input_shape), generator=generator)
        with torch.inference_mode():
            expected = reference(x).numpy()
        (found,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        if found.shape != expected.shape:
            raise SecateursError(f"onnxruntime returned shape {found.shape} at batch {batch}; PyTorch {expected.shape}")
        worst = max(worst, float(np.max(np.abs(found - expected))))
    return worst


def export_onnx_model(
    model: nn.Module,
    input_shape: Sequence[int],
    out: Path,
    *,
    metadata: Mapping[str, str] | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Export `model` to the ONNX file `out` (atomically) after checking it; returns the summary.

    The graph must pass ``onnx.checker`` and match PyTorch in onnxruntime to `tolerance` (max abs
    error at batches `CHECK_BATCHES`), else `SecateursError` and nothing is written.
    """
    onnx = require("onnx", "ONNX export")

    deployable = baked_copy(model).eval()
    data = onnx_bytes(deployable, input_shape, metadata)
    error = check_against_torch(data, deployable, input_shape)
    if not error <= tolerance:
        raise SecateursError(
            f"the ONNX graph of {type(model).__name__} differs from PyTorch by {error:.3g} "
            f"(max abs at batches {list(CHECK_BATCHES)}), above the tolerance {tolerance:g}; nothing written"
        )
    atomic_write_bytes(out, data)
    proto = onnx.load_from_string(data)
    return {
        "bytes": len(data),
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": max(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")),
        "input": {"name": INPUT_NAME, "shape": ["batch", *input_shape], "dtype": "float32"},
        "output": OUTPUT_NAME,
        "checker": "passed",
        "onnxruntime_max_abs_error": error,
        "checked_batches": list(CHECK_BATCHES),
        "metadata": dict(metadata or {}),
    }


@register_exporter(
    "onnx",
    description="ONNX graph (dynamic batch), checked with onnx.checker and against PyTorch in onnxruntime",
    suffix=".onnx",
)
def export_run_onnx(run: LoadedRun, out: Path, options: ExportOptions) -> dict[str, Any]:
    """Export the deployable model of `run` with its preprocessing in the metadata."""
    summary = export_onnx_model(run.model, run.input_shape, out, metadata=onnx_metadata(run.record))
    return {**summary, "preprocessing": run.record.preprocessing.to_json()}
