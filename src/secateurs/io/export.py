"""Export formats for finished runs: a registry of exporters, one file per format.

An exporter is ``(run: LoadedRun, out: Path) -> dict`` that writes ``out`` (a file or directory,
atomically) and returns a JSON-able summary (bytes written, checks performed). Modules named
``export_*.py`` in this package register themselves; `secateurs export RUN --format NAME` runs one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import secateurs.io as io_package
from secateurs.io.rundir import LoadedRun
from secateurs.registry import Registry

ExportFn = Callable[[LoadedRun, Path], dict[str, Any]]


@dataclass(frozen=True)
class Exporter:
    name: str
    export: ExportFn
    description: str
    suffix: str
    """Default output name suffix (``.onnx``, ``.packed``, …) appended to the run's name."""


EXPORTERS: Registry[Exporter] = Registry("export format")


def register_exporter(name: str, *, description: str, suffix: str) -> Callable[[ExportFn], ExportFn]:
    def decorator(function: ExportFn) -> ExportFn:
        EXPORTERS.add(name, Exporter(name, function, description, suffix))
        return function

    return decorator


def load_exporters() -> Registry[Exporter]:
    """Import every ``export_*`` module of `secateurs.io` (each registers its format)."""
    for module in pkgutil.iter_modules(io_package.__path__):
        if module.name.startswith("export_"):
            importlib.import_module(f"secateurs.io.{module.name}")
    return EXPORTERS
