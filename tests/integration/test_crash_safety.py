"""Crash safety through the CLI: SIGKILL at random points, concurrent writers, divergence.

The kill tests start ``python -m secateurs`` subprocesses on the synthetic dataset and SIGKILL each at
least three times at seeded random points (after a randomly chosen amount of progress, plus a random
delay, so a kill can land anywhere in an epoch, in a checkpoint write or in a commit). After every
kill every run directory on disk must be complete or absent; ``--resume`` (a re-run for ``bench``)
must then finish with exactly the metrics, history and weights of an uninterrupted run with the same
seed, and the bench grid with no duplicate or missing row.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from secateurs.cli import main
from secateurs.io.files import load_tensors
from secateurs.runs.directory import is_run_dir, partial_dir
from secateurs.runtime.malloc import ALLOCATOR_ENV

SOURCE = Path(__file__).resolve().parents[2] / "src"
DATA = ["--data", "synthetic", "--no-latency", "--batch-size", "32", "--lr", "0.05", "--seed", "5"]
KILLS = 3


def start(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **ALLOCATOR_ENV,  # no re-exec: the pid we kill is the one doing the work
        "PYTHONPATH": os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "secateurs", "--quiet", "--threads", "1", *argv],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def finish(argv: Sequence[str], log: Path) -> None:
    process = start(argv, log)
    assert process.wait(timeout=300) == 0, log.read_text()


def read_epoch(state: Path) -> int:
    """The epoch of the checkpoint ``state`` (state.json), -1 while there is none (or it is being replaced)."""
    try:
        return int(json.loads(state.read_text())["trainer"]["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def kill_at(process: subprocess.Popen[bytes], progress: Callable[[], int], target: int, delay: float) -> bool:
    """SIGKILL ``process`` ``delay`` seconds after ``progress()`` reaches ``target``; False if it exited first."""
    deadline = time.monotonic() + 300
    while progress() < target:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "no progress within 300 s"
        time.sleep(0.005)
    time.sleep(delay)
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return True


def assert_complete_or_absent(*parents: Path) -> None:
    """Every visible entry of ``parents`` is a finished run; hidden ones (``.NAME.partial``) are not runs."""
    for parent in parents:
        if not parent.exists():
            continue
        for entry in parent.iterdir():
            if not entry.name.startswith("."):  # hidden: staging (.NAME.partial) and lock files, never read as runs
                assert is_run_dir(entry), f"{entry} is visible but not a complete run directory"


def kill_repeatedly(
    argv: Sequence[str],
    resume_argv: Sequence[str],
    progress: Callable[[], int],
    targets: Sequence[int],
    rng: random.Random,
    log: Path,
    check: Callable[[], None],
) -> int:
    """Start, kill at each target (restarting with ``resume_argv``), then run to the end; returns the kills."""
    kills = 0
    command = argv
    for target in targets:
        process = start(command, log)
        if not kill_at(process, progress, target, rng.uniform(0.0, 0.05)):  # within an epoch (~0.1 s here)
            assert process.returncode == 0, log.read_text()
            return kills  # it finished before the kill (a fast machine): the run is complete
        kills += 1
        check()
        command = resume_argv
    finish(resume_argv, log)
    return kills


def comparable(info: dict[str, Any]) -> dict[str, Any]:
    """run.json without what legitimately differs between two runs (times, names, paths)."""
    drop = {"created", "timings", "name", "versions", "parent"}
    result = {key: value for key, value in info.items() if key not in drop}
    history = result.get("history")
    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    if isinstance(history, list):
        result["history"] = strip(history)
    elif isinstance(history, dict):
        result["history"] = {key: strip(value) for key, value in history.items()}
    return result


def assert_same_run(expected: Path, got: Path) -> None:
    assert comparable(json.loads((got / "run.json").read_text())) == comparable(
        json.loads((expected / "run.json").read_text())
    )
    for name in ("model.safetensors", "masks.safetensors"):
        if (expected / name).exists():
            a, b = load_tensors(expected / name), load_tensors(got / name)
            assert sorted(a) == sorted(b)
            for key in a:
                assert torch.equal(a[key], b[key]), f"{name}: {key}"


# ------------------------------------------------------------------------------------ kill -9
@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    rng = random.Random(1)
    train = ["train", "--model", "lenet300", *DATA, "--epochs", "8"]
    finish([*train, "--out", str(tmp_path / "reference")], tmp_path / "reference.log")
    out = tmp_path / "killed" / "run"
    state = partial_dir(out) / "checkpoint" / "latest" / "state.json"
    kills = kill_repeatedly(
        [*train, "--out", str(out)],
        [*train, "--out", str(out), "--resume"],
        lambda: read_epoch(state),
        sorted(rng.sample(range(1, 6), KILLS)),
        rng,
        tmp_path / "killed.log",
        lambda: assert_complete_or_absent(out.parent),
    )
    assert kills == KILLS
    assert sorted(os.listdir(out.parent)) == ["run"]  # no partial dir or lock left
    assert_same_run(tmp_path / "reference", out)


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "dense"
    threads = torch.get_num_threads()
    try:
        argv = ["--quiet", "--threads", "1", "train", "--model", "lenet300", *DATA, "--epochs", "1", "--out", str(out)]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_killed_fine_tuning_resumes_to_the_uninterrupted_result(dense: Path, tmp_path: Path) -> None:
    rng = random.Random(2)
    prune = ["prune", "--from", str(dense), "--method", "magnitude", "--sparsity", "0.8", *DATA[:3], "--seed", "5"]
    prune += ["--finetune-epochs", "8", "--finetune-batch-size", "32", "--finetune-lr", "0.01"]
    finish([*prune, "--out", str(tmp_path / "reference")], tmp_path / "reference.log")
    out = tmp_path / "killed" / "pruned"
    state = partial_dir(out) / "checkpoint" / "finetune" / "latest" / "state.json"
    kills = kill_repeatedly(
        [*prune, "--out", str(out)],
        [*prune, "--out", str(out), "--resume"],
        lambda: read_epoch(state),
        sorted(rng.sample(range(1, 6), KILLS)),
        rng,
        tmp_path / "killed.log",
        lambda: assert_complete_or_absent(out.parent),
    )
    assert kills == KILLS
    assert sorted(os.listdir(out.parent)) == ["pruned"]
    assert_same_run(tmp_path / "reference", out)
    masks = load_tensors(out / "masks.safetensors")
    weights = load_tensors(out / "model.safetensors")
    assert all(int(torch.count_nonzero(weights[name][~mask])) == 0 for name, mask in masks.items())


SUITE = """
name: crash
data: {name: synthetic}
seeds: [0]
models:
  - {name: lenet300, train: {epochs: 3, lr: 0.05, batch_size: 32}}
methods:
  - {name: magnitude}
  - {name: random}
sparsities: [0.5, 0.8, 0.9]
finetune: {epochs: 1, lr: 0.01, batch_size: 32}
keep_runs: true
"""


def result_rows(out: Path) -> list[dict[str, Any]]:
    path = out / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bench_progress(out: Path) -> Callable[[], int]:
    """Dense epochs done plus complete result rows: 3 + 1 + 6 at the end."""
    state = out / "dense" / ".lenet300-seed0.partial" / "checkpoint" / "latest" / "state.json"

    def progress() -> int:
        epochs = 3 if is_run_dir(out / "dense" / "lenet300-seed0") else max(read_epoch(state), 0)
        try:
            rows = (out / "results.jsonl").read_bytes().count(b"\n")
        except OSError:
            rows = 0
        return epochs + rows

    return progress


@pytest.mark.slow
def test_killed_bench_completes_the_grid_without_duplicates(tmp_path: Path) -> None:
    rng = random.Random(3)
    suite = tmp_path / "crash.yaml"
    suite.write_text(SUITE)
    finish(["bench", str(suite), "--out", str(tmp_path / "reference")], tmp_path / "reference.log")
    out = tmp_path / "killed"
    bench = ["bench", str(suite), "--out", str(out)]
    kills = kill_repeatedly(
        bench,
        bench,
        bench_progress(out),
        sorted(rng.sample(range(1, 9), KILLS)),
        rng,
        tmp_path / "killed.log",
        lambda: assert_complete_or_absent(out / "dense", out / "runs"),
    )
    assert kills == KILLS
    expected = {row["key"]: row for row in result_rows(tmp_path / "reference")}
    rows = result_rows(out)
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)) == len(expected) == 7  # dense + 2 methods × 3 sparsities
    assert set(keys) == set(expected)
    for row in rows:
        for field in ("metrics", "metrics_before_finetune", "sparsity", "method", "config"):
            assert row.get(field) == expected[row["key"]].get(field), (row["key"], field)
    assert sorted(os.listdir(out / "runs")) == sorted(os.listdir(tmp_path / "reference" / "runs"))
    assert_complete_or_absent(out / "dense", out / "runs")
    assert not [name for name in os.listdir(out) if name.startswith(".")]  # no lock left
    for name in os.listdir(out / "runs"):
        assert_same_run(tmp_path / "reference" / "runs" / name, out / "runs" / name)


# ------------------------------------------------------------------------- concurrent writers
def test_a_second_writer_of_the_same_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    lock = out.with_name(".run.lock")
    train = ["train", "--model", "lenet300", *DATA, "--out", str(out)]
    first = start([*train, "--epochs", "200"], tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 300
        while not lock.exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        code = main(["--quiet", *train, "--epochs", "1"])
        err = capsys.readouterr().err
        assert code == 2
        assert err.strip() == (
            f"secateurs: error: {out} is being written by another secateurs process (pid {first.pid}); "
            f"wait for it or remove {lock} if that process is gone"
        )
        assert first.poll() is None  # the first writer is untouched
    finally:
        first.kill()
        first.wait()
    assert lock.exists() and not out.exists()  # SIGKILL left a stale lock and a partial dir, nothing published
    assert main(["--quiet", "--threads", "1", *train, "--epochs", "1"]) == 0  # a dead holder's lock is taken over
    assert sorted(os.listdir(tmp_path)) == ["first.log", "run"] and is_run_dir(out)


# ------------------------------------------------------------------------------------ NaN / Inf
def test_divergence_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "diverged"
    train = ["--quiet", "--threads", "1", "train", "--model", "lenet300", *DATA]
    # 34 steps per epoch (1,100 examples, batch 32); after epoch 1 the LR jumps from 0.05 to 5e10.
    schedule = ["--schedule", "step", "--set", "milestones=[1]", "--set", "gamma=1.0e+12"]
    code = main([*train, "--epochs", "3", *schedule, "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    pattern = r"secateurs: the loss became (\S+) at epoch 2, step (\d+); the last good checkpoint is in (.+)"
    match = re.fullmatch(pattern, lines[0])
    assert match is not None, lines[0]
    assert match.group(1) in ("nan", "inf", "-inf")
    assert 35 <= int(match.group(2)) <= 68
    assert Path(match.group(3)) == partial_dir(out) / "checkpoint"
    assert not out.exists()
    state = json.loads((partial_dir(out) / "checkpoint" / "latest" / "state.json").read_text())
    assert state["trainer"]["epoch"] == 1 and state["trainer"]["step"] == 34
    kept = load_tensors(partial_dir(out) / "checkpoint" / "latest" / "model.safetensors")
    assert all(bool(torch.isfinite(value).all()) for value in kept.values())
    # The kept checkpoint is exactly the model after one good epoch (constant LR 0.05 until epoch 1).
    reference = tmp_path / "one-epoch"
    assert main(["--quiet", "--threads", "1", "train", "--model", "lenet300", *DATA, "--epochs", "1",
                 "--schedule", "constant", "--out", str(reference)]) == 0  # fmt: skip
    expected = load_tensors(reference / "model.safetensors")
    assert all(torch.equal(expected[name], kept[name]) for name in expected)
