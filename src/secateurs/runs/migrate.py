"""Schema versions of run.json and of bench result rows, and the migrations between them.

A record's ``schema_version`` says which layout it was written in; a record without one is version 1
(every run.json and ``results.jsonl`` row written before the field existed). Reading applies the
migrations below in order, in memory, until the record is at `SCHEMA_VERSION`; nothing is rewritten
on read. A record is stored in the current layout (so upgraded on disk) only when secateurs writes it
again (`secateurs.runs.update.update_run`, e.g. ``secateurs latency``). A record from a *newer*
secateurs than this one is refused with a `RunDirError` naming both versions, never guessed at.

Policy: a change that renames, moves or retypes a field bumps `SCHEMA_VERSION` and adds one function
``N → N + 1`` to `RECORD_MIGRATIONS` and `ROW_MIGRATIONS` (pure: a new dict in, a new dict out); a
new optional field needs no bump. The migrations of every past version stay, so a run directory of
any age still loads (``tests/corpus/rundirs/`` keeps one per version).

Version 1 → 2:

* ``before_finetune`` (bench rows, and the run.json of kept bench cells) becomes
  ``metrics_before_finetune``, the name run.json always used;
* ``history`` as a list becomes ``{"train": [...]}`` for a training run and ``{"method": [...]}``
  otherwise (`sec.save` wrote the method's rounds as a bare list);
* ``config: {"prune": ...}`` (`sec.save`) becomes ``config: {"method": ...}``, as `prune_run` writes it;
* a kept bench cell's run.json (the row's keys at the top level) moves ``key``, ``suite``, ``label``,
  ``sparsity``, ``round`` and ``rates`` under ``bench``, its prune config under ``config.method``,
  and drops the row's ``method`` name (``config.method.method`` holds it);
* any other unknown top-level key (what ``sec.save(extra=...)`` merged in) moves under ``extra``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from secateurs.errors import RunDirError

SCHEMA_VERSION: Final = 2
"""The layout this secateurs writes (run.json and result rows alike)."""

RECORD_KEYS = frozenset(
    {
        "schema_version",
        "name",
        "created",
        "versions",
        "kind",
        "parent",
        "seed",
        "config",
        "model",
        "preprocessing",
        "dense",
        "metrics",
        "metrics_before_finetune",
        "method_info",
        "history",
        "stop_reason",
        "train_epochs",
        "timings",
        "latency",
        "bench",
        "recipe",
        "extra",
    }
)
"""The top-level keys of a version-2 run.json (`secateurs.runs.record.RunRecord`)."""

BENCH_KEYS = ("key", "suite", "label", "sparsity", "round", "rates")
"""The bench row's keys a kept cell's version-1 run.json held at its top level."""

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def schema_version(raw: Mapping[str, Any], where: str) -> int:
    """The ``schema_version`` of ``raw`` (1 when absent); anything but a known integer is a `RunDirError`."""
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunDirError(f"{where}: schema_version must be an integer ≥ 1, found {version!r}")
    if version > SCHEMA_VERSION:
        raise RunDirError(
            f"{where} was written with schema version {version}, newer than this secateurs reads "
            f"(up to {SCHEMA_VERSION}); upgrade secateurs to read it"
        )
    return version


def _rename_before_finetune(record: dict[str, Any]) -> None:
    """``before_finetune`` → ``metrics_before_finetune`` (kept when both exist: the newer name wins)."""
    if "before_finetune" in record:
        before = record.pop("before_finetune")
        record.setdefault("metrics_before_finetune", before)


def record_1_to_2(raw: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a version-1 run.json (see the module docstring); returns a new dict, ``raw`` is left alone."""
    record = dict(raw)
    _rename_before_finetune(record)
    if "key" in record and "suite" in record and "bench" not in record:  # a kept bench cell
        record["bench"] = {key: record.pop(key) for key in BENCH_KEYS if key in record}
        if isinstance(record.get("method"), str):
            record.pop("method")
        config = record.get("config")
        if isinstance(config, dict) and isinstance(config.get("method"), str):
            record["config"] = {"method": config}
    config = record.get("config")
    if isinstance(config, dict) and "prune" in config and "method" not in config:
        record["config"] = {("method" if key == "prune" else key): value for key, value in config.items()}
    history = record.get("history")
    if isinstance(history, list):
        record["history"] = {"train" if record.get("kind") == "train" else "method": history}
    unknown = [key for key in record if key not in RECORD_KEYS]
    if unknown:
        extra = dict(record["extra"]) if isinstance(record.get("extra"), dict) else {}
        extra.update({key: record.pop(key) for key in unknown})
        record["extra"] = extra
    record["schema_version"] = 2
    return record


def row_1_to_2(raw: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a version-1 result row: ``before_finetune`` → ``metrics_before_finetune``."""
    row = dict(raw)
    _rename_before_finetune(row)
    row["schema_version"] = 2
    return row


RECORD_MIGRATIONS: dict[int, Migration] = {1: record_1_to_2}
"""``N → the function that upgrades a version-N run.json to N + 1``."""

ROW_MIGRATIONS: dict[int, Migration] = {1: row_1_to_2}
"""``N → the function that upgrades a version-N result row to N + 1``."""


def _upgrade(raw: Mapping[str, Any], migrations: Mapping[int, Migration], where: str) -> dict[str, Any]:
    record = dict(raw)
    version = schema_version(record, where)
    while version < SCHEMA_VERSION:
        record = migrations[version](record)
        version += 1
    return record


def upgrade_record(raw: Mapping[str, Any], where: str = "run.json") -> dict[str, Any]:
    """``raw`` (a run.json object of any version) in the current layout; a new dict, nothing mutated."""
    return _upgrade(raw, RECORD_MIGRATIONS, where)


def upgrade_row(raw: Mapping[str, Any], where: str = "result row") -> dict[str, Any]:
    """``raw`` (a ``results.jsonl`` row of any version) in the current layout; a new dict, nothing mutated."""
    return _upgrade(raw, ROW_MIGRATIONS, where)
