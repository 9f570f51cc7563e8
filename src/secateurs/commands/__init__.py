"""CLI sub-commands: one module per command, each with ``ORDER`` and ``register(commands)``.

`secateurs.cli` discovers every module of this package, so adding a command is adding a file.
Modules import the library lazily inside their handlers so ``secateurs --help`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def command_modules() -> list[ModuleType]:
    """Every command module, in ``ORDER``."""
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_") and info.name != "common"
    ]
    return sorted(modules, key=lambda module: (getattr(module, "ORDER", 100), module.__name__))
