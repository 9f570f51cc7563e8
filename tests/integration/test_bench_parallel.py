"""``secateurs bench --jobs N``: same rows as a serial run, errors surface, and a SIGKILL midway resumes cleanly."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import secateurs
from secateurs.bench.parallel import ParallelOptions
from secateurs.bench.results import ResultRow, ResultsFile
from secateurs.bench.suite import cells, load_suite
from secateurs.cli import main
from secateurs.errors import UsageError

SUITE = """
name: parallel-test
data: {{name: synthetic}}
seeds: {seeds}
models:
  - {{name: lenet300, train: {{epochs: 2, lr: 0.05, batch_size: 32}}}}
methods:
{methods}
sparsities: {sparsities}
finetune: {{epochs: 0.5, lr: 0.01}}
measure: {{latency: false}}
"""


def write_suite(path: Path, *, seeds: str, methods: list[str], sparsities: str) -> Path:
    text = SUITE.format(seeds=seeds, methods="\n".join(f"  - {m}" for m in methods), sparsities=sparsities)
    path.write_text(text)
    return path


def expected_keys(suite: Path) -> set[str]:
    loaded = load_suite(suite)
    keys = {cell.key for cell in cells(loaded)}
    return keys | {f"{model.name}|dense|0|{seed}" for seed in loaded.seeds for model in loaded.models}


def comparable(row: ResultRow) -> dict[str, Any]:
    """A row without what legitimately differs between runs: timings (also per epoch) and output paths."""
    kept = {key: value for key, value in row.to_json().items() if key not in {"timings", "run"}}
    history = kept.get("history")
    if isinstance(history, dict):
        kept["history"] = {
            phase: [{k: v for k, v in entry.items() if k != "seconds"} for entry in entries]
            for phase, entries in history.items()
        }
    return kept


def test_threads_are_split_between_jobs() -> None:
    assert ParallelOptions(jobs=2).threads_per_job(cores=2) == 1
    assert ParallelOptions(jobs=3).threads_per_job(cores=16) == 5
    assert ParallelOptions(jobs=8).threads_per_job(cores=2) == 1
    assert ParallelOptions(jobs=2, threads=3).threads_per_job(cores=2) == 3
    with pytest.raises(UsageError, match="--jobs must be ≥ 1"):
        ParallelOptions(jobs=0)


def test_jobs_flag_rejects_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path / "suite.yaml", seeds="[0]", methods=["{name: magnitude}"], sparsities="[0.5]")
    assert main(["--quiet", "bench", str(suite), "--out", str(tmp_path / "out"), "--jobs", "0"]) == 2
    assert "--jobs must be ≥ 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_rows_equal_the_serial_rows(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "suite.yaml", seeds="[0]", methods=["{name: magnitude}", "{name: random}"], sparsities="[0.5, 0.9]"
    )
    threads = torch.get_num_threads()
    try:
        assert main(["--quiet", "--threads", "1", "bench", str(suite), "--out", str(tmp_path / "serial")]) == 0
    finally:
        torch.set_num_threads(threads)
    command = ["--quiet", "--threads", "1", "bench", str(suite), "--out", str(tmp_path / "parallel"), "--jobs", "2"]
    try:
        assert main(command) == 0
    finally:
        torch.set_num_threads(threads)
    serial = {row.key: row for row in ResultsFile(tmp_path / "serial" / "results.jsonl").read()}
    parallel_rows = ResultsFile(tmp_path / "parallel" / "results.jsonl").read()
    parallel = {row.key: row for row in parallel_rows}
    assert len(parallel_rows) == len(parallel) == 5
    assert set(parallel) == set(serial) == expected_keys(suite)
    for key, row in serial.items():  # one thread everywhere: bit-identical training and metrics
        assert comparable(parallel[key]) == comparable(row), key
    assert {row.timings.jobs for row in parallel_rows if row.method != "dense"} == {2}
    log = (tmp_path / "parallel" / "dense" / "lenet300-seed0" / "log.txt").read_text()
    assert log.count("epoch 2:") == 1  # trained once, by one worker
    environment = json.loads((tmp_path / "parallel" / "environment.json").read_text())
    assert environment["jobs"] == 2 and environment["threads_per_job"] == 1
    assert multiprocessing.active_children() == []


def test_a_failing_cell_stops_the_suite_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(
        tmp_path / "suite.yaml",
        seeds="[0]",
        methods=["{name: magnitude, exclude: ['nothing-matches*']}", "{name: random}"],
        sparsities="[0.5]",
    )
    code = main(["--quiet", "bench", str(suite), "--out", str(tmp_path / "out"), "--jobs", "2"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("secateurs:")]
    assert len(lines) == 1 and "lenet300|magnitude|0.5|0" in lines[0] and "nothing-matches*" in lines[0]
    keys = [row.key for row in ResultsFile(tmp_path / "out" / "results.jsonl").read()]
    assert "lenet300|magnitude|0.5|0" not in keys and "lenet300|dense|0|0" in keys
    assert multiprocessing.active_children() == []


def group_members(group: int) -> list[int]:
    """Live (non-zombie) processes of process group ``group``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(entry.name))
    return members


def complete_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find orphaned workers")
def test_sigkill_midway_then_resume_completes_the_grid(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "suite.yaml",
        seeds="[0, 1]",
        methods=["{name: magnitude}", "{name: random}", "{name: magnitude-global}"],
        sparsities="[0.5, 0.8, 0.9]",
    )
    out = tmp_path / "out"
    results = out / "results.jsonl"
    total = len(expected_keys(suite))
    assert total == 20
    source = str(Path(secateurs.__file__).resolve().parents[1])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "secateurs", "--quiet", "bench", str(suite), "--out", str(out), "--jobs", "2"]
    process = subprocess.Popen(command, env=environment, start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while complete_lines(results) < 4:
            assert process.poll() is None, f"bench exited early: {process.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no rows after 300 s"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        at_kill = complete_lines(results)
        assert at_kill < total, "the grid finished before the kill; the test proves nothing"
        deadline = time.monotonic() + 30
        while group_members(process.pid):  # workers follow their parent (PR_SET_PDEATHSIG / watchdog)
            assert time.monotonic() < deadline, f"orphaned workers still alive: {group_members(process.pid)}"
            time.sleep(0.1)
    finally:
        if group_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        if process.stderr is not None:
            process.stderr.close()

    assert main(["--quiet", "bench", str(suite), "--out", str(out), "--jobs", "2"]) == 0
    lines = [line for line in results.read_text().splitlines() if line.strip()]
    keys = Counter(json.loads(line)["key"] for line in lines)
    assert set(keys) == expected_keys(suite)
    assert max(keys.values()) == 1, [key for key, count in keys.items() if count > 1]
    assert len(lines) == total
    for seed in (0, 1):
        assert (out / "dense" / f"lenet300-seed{seed}" / "run.json").is_file()
    assert not list((out / "dense").glob(".*.partial")) and not list(out.parent.glob(".out.lock"))
    assert multiprocessing.active_children() == []
