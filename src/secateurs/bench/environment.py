"""What a suite ran on, recorded as ``DIR/environment.json`` (machine facts: `secateurs.latency.machine`).

The bench runner writes it each time it starts (so after a resume it describes the last invocation);
the report shows it next to the latency plots, since timings mean nothing without the machine.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import torch

from secateurs.io.files import atomic_write_json
from secateurs.latency.machine import machine_facts
from secateurs.runs.directory import versions

ENVIRONMENT_FILE = "environment.json"


def environment_record(jobs: int = 1, threads_per_job: int | None = None) -> dict[str, Any]:
    """What ``environment.json`` holds: when, on what machine, with which versions and parallelism."""
    return {
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "versions": versions(),
        "jobs": jobs,
        "threads_per_job": threads_per_job if threads_per_job is not None else torch.get_num_threads(),
    }


def record_environment(out: Path, jobs: int = 1, threads_per_job: int | None = None) -> None:
    """Write ``out/environment.json`` for this bench invocation (``jobs`` worker processes)."""
    atomic_write_json(out / ENVIRONMENT_FILE, environment_record(jobs, threads_per_job if jobs > 1 else None))
