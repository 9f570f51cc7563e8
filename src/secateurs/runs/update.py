"""Change a finished run's run.json in place: `update_run`, and `record_latency` for ``secateurs latency``.

The record is read through the schema migrations and written back in the current layout
(`secateurs.runs.migrate`): updating a version-1 run upgrades its run.json on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from secateurs.io.files import atomic_write_json
from secateurs.runs.directory import RUN_FILE, read_run, run_lock
from secateurs.runs.record import RunRecord


def update_run(path: Path, change: Callable[[RunRecord], RunRecord]) -> RunRecord:
    """Replace the run.json of the run at ``path`` by ``change(record)``; returns the new record.

    Read, change and write happen under the run's lock (a concurrent writer makes this raise
    `RunDirError`), and the write is atomic (`atomic_write_json`): readers see the old file or the new
    one. Only run.json is rewritten; ``change`` must return a record (it may be a modified copy).
    """
    path = Path(path)
    with run_lock(path):
        updated = change(read_run(path))
        atomic_write_json(path / RUN_FILE, updated.to_json())
    return updated


def record_latency(path: Path, runtime: str, entry: dict[str, Any]) -> RunRecord:
    """Set ``latency[runtime] = entry`` in the run.json at ``path`` (other runtimes' entries kept); returns it."""

    def add(record: RunRecord) -> RunRecord:
        return record.model_copy(update={"latency": {**(record.latency or {}), runtime: dict(entry)}})

    return update_run(path, add)
