"""``secateurs bench --jobs N``: a suite's independent work in N spawned worker processes.

The parent keeps everything that must happen once: it owns the suite lock, decides the work, appends
every row to ``results.jsonl`` (workers never write it) and draws the progress bar with its ETA.
Workers run two kinds of task:

* ``dense``: train (or resume, or reuse) the dense model of one (model, seed) — submitted once per
  pair, so no two processes ever train the same model;
* ``cell``: prune and fine-tune one cell, returning its row — submitted only after its dense model
  is finished.

Each worker sets ``torch.set_num_threads(T)`` with ``T = max(1, usable cores // N)`` (or the
``--threads`` given), so N workers do not oversubscribe the machine. Workers die with their parent:
on Linux through ``PR_SET_PDEATHSIG``, everywhere through a watchdog thread that notices the parent
is gone, so a killed bench leaves no orphan holding a dense model's lock. Resumption is the serial
runner's: finished dense runs are reused, interrupted ones resume from their checkpoints, and cells
whose rows are in ``results.jsonl`` are skipped.

Rows reach the file in completion order (not grid order) and carry ``timings.jobs = N``: their
latencies were measured while other cells ran, which the report points out.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from secateurs.api import load_splits
from secateurs.bench.cells import dense_dir, dense_row, ensure_dense, run_cell
from secateurs.bench.results import ResultRow, ResultsFile, parse_row
from secateurs.bench.suite import Cell, Suite
from secateurs.config import DataConfig
from secateurs.data.types import Splits
from secateurs.errors import SecateursError, UsageError
from secateurs.latency.machine import usable_cores
from secateurs.runs.directory import is_run_dir

log = logging.getLogger(__name__)

WATCHDOG_SECONDS = 0.2
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ParallelOptions:
    """How many worker processes, and how many torch threads each (None: cores split evenly)."""

    jobs: int = 1
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise UsageError(f"--jobs must be ≥ 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be ≥ 1, got {self.threads}")

    def threads_per_job(self, cores: int | None = None) -> int:
        """``threads`` if given, else ``max(1, cores // jobs)`` over the cores this process may use."""
        if self.threads is not None:
            return self.threads
        return max(1, (cores if cores is not None else usable_cores()) // self.jobs)


# ------------------------------------------------------------------------------------------ worker
@dataclass(frozen=True)
class Task:
    """One unit of work: ``kind`` is ``dense`` (payload: model index, seed) or ``cell`` (payload: a Cell)."""

    number: int
    kind: str
    payload: Any
    label: str
    """What error messages call it: the cell key, or the dense model and seed."""


@lru_cache(maxsize=1)
def _worker_splits(data: DataConfig) -> Splits:
    """The dataset, loaded once per worker process."""
    return load_splits(data)


def _die_with_parent(parent: int) -> None:
    """Exit this worker as soon as ``parent`` is gone (kernel signal where available, and a watchdog)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(70)
            time.sleep(WATCHDOG_SECONDS)

    if os.getppid() != parent:
        os._exit(70)
    threading.Thread(target=watch, name="secateurs-parent-watchdog", daemon=True).start()


def execute(suite: Suite, out: Path, task: Task) -> Any:
    """Run ``task`` in this process; returns the dense run's path (str) or the cell's row as its JSON object."""
    splits = _worker_splits(suite.data)
    if task.kind == "dense":
        model_index, seed = task.payload
        return str(ensure_dense(suite, out, suite.models[model_index], seed, splits, progress=False))
    return run_cell(suite, out, task.payload, splits, progress=False).to_json()


def worker_main(suite: Suite, out: Path, threads: int, parent: int, tasks: Any, results: Any, log_level: int) -> None:
    """A worker's loop: take a task, run it, put ``(number, "ok", value)`` or ``(number, "error", info)``."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[worker {os.getpid()}] %(message)s"))
    handler.setLevel(log_level)
    logging.getLogger("secateurs").addHandler(handler)
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            results.put((task.number, "ok", execute(suite, out, task)))
        except BaseException as error:  # reported to the parent, which stops the suite
            info = {
                "type": type(error).__name__,
                "message": str(error),
                "usage": isinstance(error, UsageError),
                "traceback": traceback.format_exc(),
            }
            results.put((task.number, "error", info))


# ------------------------------------------------------------------------------------------ parent
class WorkerFailed(SecateursError):
    """A task failed inside a worker with an internal error (the message names the task)."""


class Pool:
    """N spawned workers fed through one task queue; results come back on one result queue."""

    def __init__(self, suite: Suite, out: Path, options: ParallelOptions) -> None:
        context = multiprocessing.get_context("spawn")
        self.tasks = context.Queue()
        self.results = context.Queue()
        self.pending: dict[int, Task] = {}
        self._numbers = 0
        threads = options.threads_per_job()
        level = logging.getLogger("secateurs").getEffectiveLevel()
        level = max(level, logging.WARNING)
        self.workers = [
            context.Process(
                target=worker_main,
                args=(suite, out, threads, os.getpid(), self.tasks, self.results, level),
                name=f"secateurs-bench-{index}",
                daemon=True,
            )
            for index in range(options.jobs)
        ]
        for worker in self.workers:
            worker.start()

    def submit(self, kind: str, payload: Any, label: str) -> None:
        self._numbers += 1
        task = Task(self._numbers, kind, payload, label)
        self.pending[task.number] = task
        self.tasks.put(task)

    def next_result(self) -> tuple[Task, Any]:
        """Block until a task finishes; its value, or the task's error raised here."""
        while True:
            try:
                number, status, value = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w in self.workers if not w.is_alive()]
                if dead:
                    raise WorkerFailed(
                        f"bench worker {dead[0].name} exited unexpectedly (exit code {dead[0].exitcode}); "
                        "re-run the same command to resume"
                    ) from None
                continue
            task = self.pending.pop(number)
            if status == "ok":
                return task, value
            what = task.label
            log.debug("%s failed in a worker:\n%s", what, value["traceback"])
            if value["usage"]:
                raise UsageError(f"{what}: {value['message']}")
            raise WorkerFailed(f"{what} failed in a worker: {value['type']}: {value['message']}")

    def close(self, *, graceful: bool) -> None:
        """Stop the workers: after their current task (``graceful``) or at once."""
        if graceful:
            for _ in self.workers:
                self.tasks.put(None)
            for worker in self.workers:
                worker.join()
        else:
            for worker in self.workers:
                if worker.is_alive():
                    worker.terminate()
            for worker in self.workers:
                worker.join(timeout=10)
        self.tasks.close()
        self.results.close()


def run_parallel(
    suite: Suite,
    out: Path,
    results: ResultsFile,
    done: set[str],
    todo: list[Cell],
    options: ParallelOptions,
    *,
    total: int,
    progress: bool,
) -> None:
    """Finish ``todo`` (and every missing dense row) with ``options.jobs`` workers; rows go to ``results``.

    Like the serial loop, every (model, seed) pair gets its dense model (reused when finished) and its
    dense row (unless present). ``done`` (the keys already in the file) is updated as rows are appended.
    """
    pairs = [(index, seed) for seed in suite.seeds for index in range(len(suite.models))]
    if suite.measure.latency and todo:
        log.warning(
            "latency is measured while up to %d cells run at once; use --jobs 1 for timings you will publish",
            options.jobs,
        )
    bar = tqdm(total=total, initial=total - len(todo), disable=not progress, file=sys.stderr, unit="cell")
    pool = Pool(suite, out, options)
    graceful = False
    try:

        def append(row: ResultRow) -> None:
            if row.key in done:
                return
            results.append(row)
            done.add(row.key)

        def dense_ready(index: int, seed: int, path: Path) -> None:
            model = suite.models[index]
            append(dense_row(suite, model, seed, path))
            for cell in todo:
                if cell.model == model and cell.seed == seed:
                    pool.submit("cell", cell, f"cell {cell.key}")

        for index, seed in pairs:
            path = dense_dir(out, suite.models[index], seed)
            if is_run_dir(path):
                dense_ready(index, seed, path)
            else:
                pool.submit("dense", (index, seed), f"dense {suite.models[index].row_name} (seed {seed})")
        bar.set_description(f"{options.jobs} jobs")
        while pool.pending:
            task, value = pool.next_result()
            if task.kind == "dense":
                model_index, seed = task.payload
                dense_ready(model_index, seed, Path(value))
                continue
            row = parse_row(value, f"the row of {task.label}")
            append(row.model_copy(update={"timings": row.timings.model_copy(update={"jobs": options.jobs})}))
            bar.set_postfix_str(row.key, refresh=False)
            bar.update(1)
        graceful = True
    finally:
        bar.close()
        pool.close(graceful=graceful)
