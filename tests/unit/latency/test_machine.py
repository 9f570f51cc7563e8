"""Machine facts and the timing scripts' helpers: parsing /proc files, measurement conditions, grouping."""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs.bench.results import group_rows
from secateurs.latency.machine import cpu_model, measurement_conditions, memory_gib


def test_cpu_model_reads_the_model_name(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Example CPU @ 2.10GHz\n")
    assert cpu_model(cpuinfo) == "Example CPU @ 2.10GHz"


def test_memory_gib_reads_memtotal(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       8388608 kB\nMemFree:        1024 kB\n")
    assert memory_gib(meminfo) == pytest.approx(8.0)


def test_measurement_conditions_name_the_allocator_and_take_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1000000000")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000000")
    conditions = measurement_conditions(interleaved=True)
    assert conditions["allocator_env"] is True
    assert conditions["interleaved"] is True
    assert len(conditions["load_average_at_start"]) == 3
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert measurement_conditions()["allocator_env"] is False


def test_group_rows_keeps_first_seen_order() -> None:
    rows = [
        {"model": "b", "threads": 1, "ratio": 1.0},
        {"model": "a", "threads": 2, "ratio": 2.0},
        {"model": "b", "threads": 1, "ratio": 3.0},
    ]
    groups = group_rows(rows, "model", "threads")
    assert list(groups) == [("b", 1), ("a", 2)]
    assert [row["ratio"] for row in groups[("b", 1)]] == [1.0, 3.0]
