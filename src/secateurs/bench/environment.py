"""Facts about the machine and software a suite ran on, recorded as ``DIR/environment.json``.

The bench runner writes it each time it starts (so after a resume it describes the last invocation);
the report shows it next to the latency plots, since timings mean nothing without the machine. The
side-by-side timing scripts in ``benchmarks/`` record `measurement_conditions` with their results and
summarise their sessions with `group_rows`.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from secateurs.io.files import atomic_write_json
from secateurs.runs.directory import versions
from secateurs.runtime.malloc import allocator_env_is_set

if TYPE_CHECKING:
    from secateurs.bench.parallel import ParallelOptions

ENVIRONMENT_FILE = "environment.json"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else `platform.processor()`, else "unknown"."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Total RAM in GiB (``MemTotal`` of ``/proc/meminfo``, else sysconf), None if unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def machine_facts() -> dict[str, Any]:
    """CPU model, logical and usable cores, torch's intra-op threads, RAM, OS."""
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }


def environment_record(jobs: int = 1, threads_per_job: int | None = None) -> dict[str, Any]:
    """What ``environment.json`` holds: when, on what machine, with which versions and parallelism."""
    return {
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "versions": versions(),
        "jobs": jobs,
        "threads_per_job": threads_per_job if threads_per_job is not None else torch.get_num_threads(),
    }


def record_environment(out: Path, parallel: ParallelOptions | None = None) -> None:
    """Write ``out/environment.json`` for this bench invocation (serial unless ``parallel.jobs > 1``)."""
    if parallel is not None and parallel.jobs > 1:
        record = environment_record(parallel.jobs, parallel.threads_per_job())
    else:
        record = environment_record()
    atomic_write_json(out / ENVIRONMENT_FILE, record)


def measurement_conditions(**extra: Any) -> dict[str, Any]:
    """What a timing is worth knowing with: allocator settings, load, cores, platform, torch, when."""
    return {
        "allocator_env": allocator_env_is_set(),
        "load_average_at_start": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def group_rows(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows grouped by their values of ``keys``, groups and rows in first-seen order."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return groups
