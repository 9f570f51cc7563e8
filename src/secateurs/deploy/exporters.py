"""Export formats for finished runs: a registry of exporters, one file per format.

An exporter is ``(run: LoadedRun, out: Path, options) -> dict`` that writes ``out`` (a file or
directory, atomically) and returns a JSON-able summary (bytes written, checks performed). ``options``
is an instance of the format's `ExportOptions` subclass (validated; unknown keys are errors), set on
the command line with ``--set KEY=VALUE``. Modules named ``export_*.py`` in this package register
themselves; `secateurs export RUN --format NAME` runs one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

import secateurs.deploy as deploy_package
from secateurs.errors import ConfigError
from secateurs.registry import Registry
from secateurs.runs.directory import LoadedRun


class ExportOptions(BaseModel):
    """The options of an export format (this base has none); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ExportFn = Callable[[LoadedRun, Path, Any], dict[str, Any]]


@dataclass(frozen=True)
class Exporter:
    name: str
    export: ExportFn
    description: str
    suffix: str
    """Default output name suffix (``.onnx``, ``.packed``, …) appended to the run's name."""
    options: type[ExportOptions] = ExportOptions

    def parse_options(self, settings: Mapping[str, Any] | None = None) -> ExportOptions:
        """Validate ``settings`` against this format's options; a bad key or value is a `ConfigError`."""
        try:
            return self.options.model_validate(dict(settings or {}))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'options'}: {item['msg']}" for item in error.errors()
            )
            accepted = ", ".join(self.options.model_fields) or "none"
            raise ConfigError(f"export format {self.name!r} options: {problems} (accepted: {accepted})") from None

    def run(self, run: LoadedRun, out: Path, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Export ``run`` to ``out`` with ``settings`` (validated first); returns the summary."""
        return self.export(run, out, self.parse_options(settings))


EXPORTERS: Registry[Exporter] = Registry("export format")


def register_exporter(
    name: str, *, description: str, suffix: str, options: type[ExportOptions] = ExportOptions
) -> Callable[[ExportFn], ExportFn]:
    def decorator(function: ExportFn) -> ExportFn:
        EXPORTERS.add(name, Exporter(name, function, description, suffix, options))
        return function

    return decorator


def load_exporters() -> Registry[Exporter]:
    """Import every ``export_*`` module of `secateurs.deploy` (each registers its format)."""
    for module in pkgutil.iter_modules(deploy_package.__path__):
        if module.name.startswith("export_"):
            importlib.import_module(f"secateurs.deploy.{module.name}")
    return EXPORTERS
