"""Facts about the machine a timing ran on: CPU, cores, memory, allocator settings, load.

The side-by-side timing scripts in ``benchmarks/`` record `measurement_conditions` with their
results; the bench records `machine_facts` in each suite's ``environment.json``.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import torch

from secateurs.runtime.devices import cpu_model
from secateurs.runtime.malloc import allocator_env_is_set

__all__ = ["cpu_model", "machine_facts", "measurement_conditions", "memory_gib", "usable_cores"]


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
