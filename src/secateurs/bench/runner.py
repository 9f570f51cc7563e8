"""Run a suite: train each dense model once per seed, prune every cell, append one row per cell.

Resumable: dense models live in ``DIR/dense/MODEL-seedN`` (finished run directories are reused,
interrupted trainings resume from their last epoch), an unfinished cell's checkpoints live in
``DIR/cells/KEY`` (it resumes after its last epoch or round), and cells already in
``DIR/results.jsonl`` are skipped, so re-running after a kill completes the grid without duplicates.
The work of one cell is `secateurs.bench.cells`; ``--jobs N`` hands cells to `secateurs.bench.parallel`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

from secateurs.api import load_splits
from secateurs.bench.cells import check_cells, dense_row, ensure_dense, run_cell
from secateurs.bench.environment import record_environment
from secateurs.bench.parallel import ParallelOptions, run_parallel
from secateurs.bench.results import ResultsFile
from secateurs.bench.suite import cells, load_suite
from secateurs.bench.table import aggregate, markdown
from secateurs.io.files import atomic_write_json
from secateurs.runs.directory import run_lock

log = logging.getLogger(__name__)


def run_suite(
    path: Path,
    out: Path,
    *,
    overrides: list[str] | None = None,
    progress: bool = False,
    parallel: ParallelOptions | None = None,
) -> str:
    """Run (or finish) the suite at ``path`` into ``out``; returns the Markdown summary table.

    ``parallel`` with ``jobs > 1`` runs the cells in worker processes (`secateurs.bench.parallel`).
    """
    suite = load_suite(path, overrides or [])
    splits = load_splits(suite.data)
    check_cells(suite, splits, f"suite {path}")  # nothing is written before the suite is known to be runnable
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        atomic_write_json(out / "suite.json", suite.model_dump(by_alias=True))
        if parallel is not None and parallel.jobs > 1:
            record_environment(out, parallel.jobs, parallel.threads_per_job())
        else:
            record_environment(out)
        results = ResultsFile(out / "results.jsonl")
        done = {row.key for row in results.read(repair=True)}
        grid = list(cells(suite))
        todo = [cell for cell in grid if cell.key not in done]
        log.info("suite %s: %d cells, %d done, %d to run", suite.name, len(grid), len(grid) - len(todo), len(todo))
        if parallel is not None and parallel.jobs > 1:  # bench --jobs N: bench/parallel.py
            run_parallel(suite, out, results, done, todo, parallel, total=len(grid), progress=progress)
            return markdown(aggregate(results.read()))
        bar = tqdm(total=len(grid), initial=len(grid) - len(todo), disable=not progress, file=sys.stderr, unit="cell")
        try:
            for seed in suite.seeds:
                for model in suite.models:
                    path_dense = ensure_dense(suite, out, model, seed, splits, progress)
                    row = dense_row(suite, model, seed, path_dense)
                    if row.key not in done:
                        results.append(row)
                        done.add(row.key)
                    for cell in (c for c in todo if c.seed == seed and c.model == model):
                        bar.set_description(cell.key)
                        results.append(run_cell(suite, out, cell, splits, progress))
                        bar.update(1)
        finally:
            bar.close()
        return markdown(aggregate(results.read()))
