"""YAML reading for recipes, suites and target files: size and depth limits, ``--set`` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from secateurs.errors import ConfigError

MAX_YAML_VALUES = 100_000
"""A recipe or suite may expand to at most this many values once YAML aliases are followed (alias bombs)."""


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b] = value`` for ``dotted = "a.b"``, creating intermediate mappings."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = {}
            node[key] = child
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=x"]`` → ``[("a.b", 1), ("c", "x")]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. method.sparsity=0.7), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed


def load_yaml(path: Path, what: str = "recipe") -> dict[str, Any]:
    """Read a YAML mapping; unreadable, malformed or non-mapping files are a `ConfigError`."""
    tree = read_yaml(path, what)
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping, found {type(tree).__name__}")
    return tree


def read_yaml(path: Path, what: str) -> Any:
    """Read any YAML document; unreadable, malformed, too deep or alias-bomb files are a `ConfigError`."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {what} {path}: {error}") from None
    try:
        tree = yaml.safe_load(text)
        size = expanded_size(tree, {})
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is nested too deeply to be a {what}") from None
    if size > MAX_YAML_VALUES:
        raise ConfigError(
            f"{what} {path} expands to more than {MAX_YAML_VALUES:,} values once its YAML aliases are followed; "
            "refusing it (an alias bomb?)"
        )
    return tree


def expanded_size(tree: Any, sizes: dict[int, int]) -> int:
    """The number of values in ``tree`` with shared (aliased) sub-trees counted at every use.

    Linear in the number of *distinct* containers (``sizes`` memoises them by identity), so a YAML
    alias bomb is measured without being expanded.
    """
    if not isinstance(tree, dict | list):
        return 1
    known = sizes.get(id(tree))
    if known is not None:
        return known
    children = [*tree.keys(), *tree.values()] if isinstance(tree, dict) else tree
    size = 1 + sum(expanded_size(child, sizes) for child in children)
    sizes[id(tree)] = size
    return size
