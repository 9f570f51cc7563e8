"""``results.jsonl``: one JSON object per finished cell, appended and fsynced, readable after a kill."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from secateurs.errors import RunDirError
from secateurs.io.files import dumps_json

log = logging.getLogger(__name__)


class ResultsFile:
    """Append-only rows; a torn last line (the process was killed mid-write) is dropped with a warning."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self, *, repair: bool = False) -> list[dict[str, Any]]:
        """Every complete row. With ``repair`` a torn tail is cut off the file so appends stay valid."""
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
        rows = []
        for number, line in enumerate(complete.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise RunDirError(f"{self.path} line {number} is not valid JSON") from None
            if not isinstance(row, dict) or "key" not in row:
                raise RunDirError(f"{self.path} line {number} is not a result row (an object with a 'key')")
            rows.append(row)
        return rows

    def keys(self) -> set[str]:
        return {str(row["key"]) for row in self.read()}

    def append(self, row: dict[str, Any]) -> None:
        line = dumps_json(row).replace("\n", " ").strip() + "\n"
        with open(self.path, "ab") as handle:
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())


def group_rows(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows grouped by their values of ``keys``, groups and rows in first-seen order."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return groups
