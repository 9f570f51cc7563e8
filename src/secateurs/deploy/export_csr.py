"""CSR export: ``secateurs export RUN --format csr [--set density_threshold=0.2]``.

Converts the run's model with `convert_to_csr` (layers below the density threshold in CSR, the rest
dense) and writes the file described in `secateurs.deploy.csr_file` beside `out`; reads it back with
`load_csr_model` and compares the reloaded CSR model with the dense masked model on seeded random
inputs. A maximum absolute difference above `TOLERANCE` is an error and nothing is written; otherwise
the file is renamed to `out`. A model with no layer sparse enough is refused (exit 2) with the reason:
above about 20 % density CSR is slower than dense on this CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from secateurs.deploy.csr import DEFAULT_DENSITY_THRESHOLD, convert_to_csr
from secateurs.deploy.csr_file import csr_header, load_csr_model, save_csr_model
from secateurs.deploy.exporters import ExportOptions, register_exporter
from secateurs.errors import SecateursError
from secateurs.runs.directory import LoadedRun
from secateurs.sparsity.masks import baked_copy

TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3)


class CSRExportOptions(ExportOptions):
    density_threshold: float = Field(DEFAULT_DENSITY_THRESHOLD, gt=0.0, le=1.0)
    """A layer is stored in CSR when its density (non-zeros ÷ entries) is below this."""


def max_abs_difference(
    first: nn.Module, second: nn.Module, input_shape: Sequence[int], batches: Sequence[int] = CHECK_BATCHES
) -> float:
    """Largest |first(x) − second(x)| over seeded random inputs at each batch size (``no_grad``)."""
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in batches:
        x = torch.randn((batch, *input_shape), generator=generator)
        with torch.no_grad():
            worst = max(worst, float((first(x) - second(x)).abs().max()))
    return worst


@register_exporter(
    "csr",
    description="unstructured-sparse layers in CSR (safetensors + JSON header) for sparse inference",
    suffix=".csr.safetensors",
    options=CSRExportOptions,
)
def export_run_csr(run: LoadedRun, out: Path, options: CSRExportOptions) -> dict[str, Any]:
    """Write `run`'s model as a CSR file at `out`, verified by reloading it; returns the summary."""
    dense = baked_copy(run.model).eval()
    conversion = convert_to_csr(dense, density_threshold=options.density_threshold)
    header = csr_header(
        conversion,
        model=run.record.model.to_json(),
        plan=run.plan.to_json() if run.plan is not None else None,
        preprocessing=run.record.preprocessing.to_json(),
        source=run.record.name or run.path.name,
    )
    staging = out.with_name(f".{out.name}.{os.getpid()}.verify")
    try:
        size = save_csr_model(conversion, staging, header)
        reloaded = load_csr_model(staging).model
        error = max_abs_difference(reloaded, dense, run.input_shape)
        if not error <= TOLERANCE:
            raise SecateursError(
                f"the reloaded CSR model differs from the dense model by {error:.3g} (max abs), "
                f"above the tolerance {TOLERANCE:g}; nothing written"
            )
        os.replace(staging, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
    summary = conversion.summary()
    return {
        "bytes": size,
        "max_abs_error_vs_dense": error,
        "checked_batches": list(CHECK_BATCHES),
        "density_threshold": summary["density_threshold"],
        "csr_layers": summary["csr_layers"],
        "dense_layers": summary["dense_layers"],
        "csr_nonzeros": summary["csr_nonzeros"],
        "csr_entries": summary["csr_entries"],
        "layers": summary["layers"],
        "preprocessing": run.record.preprocessing.to_json(),
    }
