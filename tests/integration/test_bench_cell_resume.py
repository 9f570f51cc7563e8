"""A suite killed inside a cell resumes that cell where it stopped and ends with the same row as a run
that was never interrupted: fine-tuning after its last epoch, IMP after its last round."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from secateurs.bench import runner
from secateurs.bench.results import ResultRow, ResultsFile
from secateurs.methods import iterative_run
from secateurs.training import loop

SUITE = """
name: resume-tiny
data: {name: synthetic}
models:
  - name: lenet300
    train: {epochs: 1, batch_size: 32, train_subset: 128}
methods:
  - METHOD
sparsities: [0.75]
finetune: {epochs: 3, batch_size: 32, train_subset: 128}
measure: {latency: false}
"""


class Killed(Exception):
    pass


def killing_after(calls: int | None, real: Callable[..., Any], seen: list[Path]) -> Callable[..., Any]:
    """``real``, recording its writes inside a cell's directory in ``seen``; raise after ``calls`` of them."""

    def wrapper(directory: Path, *args: Any, **kwargs: Any) -> Any:
        result = real(directory, *args, **kwargs)
        if "cells" in Path(directory).parts:
            seen.append(directory)
            if len(seen) == calls:
                raise Killed(str(directory))
        return result

    return wrapper


def row(out: Path) -> ResultRow:
    (cell,) = [r for r in ResultsFile(out / "results.jsonl").read() if r.method != "dense"]
    return cell


@pytest.mark.parametrize(
    ("method", "module", "function", "calls"),
    [
        ("{name: magnitude}", loop, "save_checkpoint", 2),  # killed after fine-tuning epoch 2 of 3
        ("{name: imp, options: {rounds: 3}}", iterative_run, "save_round_state", 3),  # after round 2 of 3
    ],
    ids=["finetune", "imp-rounds"],
)
def test_a_killed_cell_resumes_and_matches_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, module: Any, function: str, calls: int
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("METHOD", method))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    runner.run_suite(suite, whole)
    killed.mkdir()
    shutil.copytree(whole / "dense", killed / "dense")  # the same dense model, not trained again

    real = getattr(module, function)
    with monkeypatch.context() as patch:
        patch.setattr(module, function, killing_after(calls, real, []))
        with pytest.raises(Killed):
            runner.run_suite(suite, killed)
    assert any((killed / "cells").iterdir())  # the interrupted cell left its checkpoints
    writes: list[Path] = []
    monkeypatch.setattr(module, function, killing_after(None, real, writes))
    runner.run_suite(suite, killed)
    assert len(writes) == 1  # only the last epoch / round was redone: a restart would write `calls + 1`

    first, second = row(whole), row(killed)
    assert second.timings.resumed is True and first.timings.resumed is None
    assert second.metrics.test_accuracy == first.metrics.test_accuracy
    assert second.metrics.test_loss == first.metrics.test_loss  # bit for bit, not just close
    assert second.metrics.nonzero_params == first.metrics.nonzero_params
    assert second.train_epochs == first.train_epochs
    assert not any((killed / "cells").iterdir())  # removed once the row was written
