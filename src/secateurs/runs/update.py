"""Add a measurement to a finished run's run.json without rewriting anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secateurs.errors import RunDirError
from secateurs.io.files import atomic_write_json
from secateurs.runs.directory import RUN_FILE, read_run, run_lock


def record_in_run(path: Path, section: str, key: str, value: Any) -> dict[str, Any]:
    """Set ``run.json[section][key] = value`` for the run at `path` and return the new run.json.

    Read, update and write happen under the run's lock (a concurrent writer makes this raise
    `RunDirError`), and the write is atomic (`atomic_write_json`): readers see the old file or the new
    one. Every other key — including the other entries of `section` — is kept as it was. A `section`
    that exists but is not a JSON object is a `RunDirError`.
    """
    path = Path(path)
    with run_lock(path):
        info = read_run(path)
        current = info.get(section, {})
        if not isinstance(current, dict):
            raise RunDirError(f"{path / RUN_FILE}: {section!r} must be a JSON object, found {type(current).__name__}")
        info[section] = {**current, key: value}
        atomic_write_json(path / RUN_FILE, info)
    return info
