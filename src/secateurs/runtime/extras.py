"""Optional dependencies: which extra brings a module, and one clear line when it is missing.

The core (pruning, training, run directories) needs torch, torch-pruning, numpy, safetensors, PyYAML,
pydantic and tqdm. ONNX export and onnxruntime timing need the ``onnx`` extra, plots the ``report``
extra, timm architectures the ``timm`` extra (``all`` installs every one; ``dev`` includes ``all``).
Modules that need an extra import it through `require`, at the point of use.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from secateurs.errors import UsageError

EXTRAS: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "matplotlib": "report",
    "timm": "timm",
}
"""Importable module → the extra of secateurs that installs it."""


class MissingExtra(UsageError):
    """An optional dependency is not installed; the message names the ``pip install`` that brings it."""


def install_hint(module: str) -> str:
    """``pip install 'secateurs[EXTRA]'`` for ``module`` (its top-level package)."""
    extra = EXTRAS.get(module.partition(".")[0], "all")
    return f"pip install 'secateurs[{extra}]'"


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module``; a missing one is a `MissingExtra` naming ``purpose`` and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = error.name or module
        raise MissingExtra(f"{purpose} needs {missing}, which is not installed: {install_hint(module)}") from None
