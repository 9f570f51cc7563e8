"""Path safety for names that become directories: run names, suite cells, model names."""

from __future__ import annotations

import re
from pathlib import Path

from secateurs.errors import ConfigError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME_LENGTH = 128
"""Longer names would break the file-name limit once ``.NAME.partial`` and suffixes are added."""


def check_name(name: str, what: str = "run name") -> str:
    """``name`` if it is a plain file name (no separators, no ``..``, not absolute, not hidden, not too long)."""
    if not SAFE_NAME.fullmatch(name) or ".." in name or len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"{what} {name!r} must be a plain name (letters, digits, '.', '_', '-'; no '/', no '..') "
            f"of at most {MAX_NAME_LENGTH} characters"
        )
    return name


def safe_child(root: Path, name: str, what: str = "run name") -> Path:
    """``root / name`` for a plain name; names with separators, ``..`` or absolute paths are refused.

    A symbolic link already at ``root / name`` is refused too: a run is never written through one.
    """
    child = root / check_name(name, what)
    if child.is_symlink():
        raise ConfigError(f"{what} {name!r}: {child} is a symbolic link; refusing to write through it")
    return child
