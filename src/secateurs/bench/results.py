"""``results.jsonl``: one `ResultRow` per finished cell, appended and fsynced, readable after a kill.

This is the one reader of bench results: the bench itself, ``secateurs report``, the scripts of
``benchmarks/`` and ``scripts/readme_tables.py`` all read rows through `ResultsFile` (or `parse_row`
for rows already in memory), so every row of every age goes through the same schema migration
(`secateurs.runs.migrate`: version-1 rows, the committed ``results/*.jsonl``, say ``before_finetune``
where version 2 says ``metrics_before_finetune``, as run.json does).

A row (`ResultRow`)::

    schema_version  2
    key             MODEL|LABEL|SPARSITY|SEED (or ...|rROUND|SEED on the rate axis): the cell's identity
    suite, model, method, label, sparsity (the cell's nominal target), seed, round, rates
    config          the cell's prune config (None for dense rows)
    metrics, metrics_before_finetune    `Metrics`, shared with run.json
    train_epochs, method_info (open-ended), history (`History`), timings (`Timings`: jobs when parallel)
    run             the run directory (dense rows, and cells kept with ``keep_runs: true``)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError

from secateurs.config.validation import format_validation_error
from secateurs.errors import RunDirError
from secateurs.io.files import dumps_json
from secateurs.runs.migrate import SCHEMA_VERSION, upgrade_row
from secateurs.runs.record import History, Metrics, Sparse, Timings

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("key", "model", "label", "sparsity", "suite", "method", "seed")
"""What every row holds; a row without one of them is refused, naming it."""

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class ResultRow(Sparse):
    """One finished bench cell (or one dense model): see the module docstring."""

    schema_version: Literal[2] = SCHEMA_VERSION
    key: str
    suite: str
    model: str
    method: str
    label: str
    sparsity: float
    seed: int
    round: int | None = None
    rates: list[float] | None = None
    config: dict[str, Any] | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    metrics_before_finetune: Metrics = Field(default_factory=Metrics)
    train_epochs: float | None = None
    method_info: dict[str, Any] | None = None
    history: History | None = None
    timings: Timings = Field(default_factory=Timings)
    run: str | None = None

    @property
    def dense(self) -> bool:
        """Whether this is a dense model's row (label ``dense``)."""
        return self.label == "dense"

    @property
    def options(self) -> dict[str, Any]:
        """The method options of the cell's prune config (empty for dense rows)."""
        options = (self.config or {}).get("options")
        return dict(options) if isinstance(options, dict) else {}

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """``history.method``: the per-round records of an iterative method (empty if none)."""
        return list(self.history.method or []) if self.history is not None else []

    def info(self, dotted: str) -> Any:
        """The value at the dotted path ``dotted`` of ``method_info`` (None where any step is missing)."""
        node: Any = self.method_info
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def parse_row(raw: object, where: str = "result row") -> ResultRow:
    """The `ResultRow` of a row object of any schema version; any problem is one `RunDirError` line.

    ``where`` names the row in the message (e.g. ``results.jsonl: row 3 ('mlp|lap|0.9|0')``).
    ``raw`` is not mutated.
    """
    if not isinstance(raw, Mapping):
        raise RunDirError(f"{where} is not a result row (an object with a 'key')")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise RunDirError(f"{where} lacks {', '.join(missing)}; rows need {', '.join(REQUIRED_KEYS)}")
    try:
        return ResultRow.model_validate(upgrade_row(raw, where))
    except ValidationError as error:
        raise RunDirError(f"{where}: {format_validation_error(error)}") from None


def parse_rows(raws: Iterable[object], where: str = "rows") -> list[ResultRow]:
    """`parse_row` of each of ``raws``, named ``where: row N`` in errors."""
    return [parse_row(raw, _row_name(where, number, raw)) for number, raw in enumerate(raws, start=1)]


def _row_name(where: str, number: int, raw: object) -> str:
    key = raw.get("key") if isinstance(raw, Mapping) else None
    return f"{where}: row {number}" + (f" ({key!r})" if key is not None else "")


class ResultsFile:
    """Append-only rows; a torn last line (the process was killed mid-write) is dropped with a warning."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self, *, repair: bool = False) -> list[ResultRow]:
        """Every complete row, parsed and migrated (`parse_row`); a missing file has none.

        A line that is not JSON or not a valid row is a `RunDirError` naming its number. With
        ``repair`` a torn tail is cut off the file so appends stay valid (the only mutation).
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        complete, _, tail = data.rpartition(b"\n")
        if tail.strip():
            log.warning(
                "%s: ignoring an incomplete last line (%d bytes) left by an interrupted run", self.path, len(tail)
            )
            if repair:
                with open(self.path, "r+b") as handle:
                    handle.truncate(len(complete) + 1 if complete else 0)
        rows: list[ResultRow] = []
        for number, line in enumerate(complete.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RunDirError(f"{self.path} line {number} is not valid JSON") from None
            except RecursionError:
                raise RunDirError(f"{self.path} line {number} is nested too deeply to be a result row") from None
            if not isinstance(raw, dict) or "key" not in raw:
                raise RunDirError(f"{self.path} line {number} is not a result row (an object with a 'key')")
            rows.append(parse_row(raw, _row_name(str(self.path), len(rows) + 1, raw)))
        return rows

    def keys(self) -> set[str]:
        return {row.key for row in self.read()}

    def append(self, row: ResultRow) -> None:
        """Append ``row`` as one line and fsync it (a kill leaves at most a torn last line)."""
        line = dumps_json(row.to_json()).replace("\n", " ").strip() + "\n"
        with open(self.path, "ab") as handle:
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())


def read_results(path: Path) -> list[ResultRow]:
    """Every row of the results file ``path`` (`ResultsFile.read`); a missing file is a `RunDirError`."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; expected a results.jsonl written by `secateurs bench`")
    return ResultsFile(path).read()


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """``items`` grouped by ``key(item)``; groups, and items within a group, in first-seen order."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def group_rows(rows: Iterable[Mapping[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    """Plain JSON rows (a benchmark's own, not `ResultRow`) grouped by their values of ``keys``, in first-seen order."""
    return group_by(rows, lambda row: tuple(row[key] for key in keys))


def seeds(rows: Sequence[ResultRow]) -> list[int]:
    """The seeds of ``rows``, sorted, each once."""
    return sorted({row.seed for row in rows})
