"""Suite entries for methods that train from scratch: ``start: init``, their own ``train``, ``seeds``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from secateurs.api import build_initialized, load_splits
from secateurs.bench import cells as cells_module
from secateurs.bench import runner
from secateurs.bench.results import ResultsFile
from secateurs.bench.suite import cells, load_suite
from secateurs.errors import ConfigError

SUITE = """
name: gradual-tiny
data: {name: synthetic}
seeds: [0, 1]
models:
  - name: lenet300
    train: {epochs: 0.25, batch_size: 32, train_subset: 128}
methods:
  - {name: gmp, start: init, seeds: [0], sparsities: [0.5],
     train: {epochs: 0.5, batch_size: 32, train_subset: 128}, options: {end: 0.5, every: 1}}
  - {name: magnitude, sparsities: [0.5]}
finetune: {epochs: 0.25, batch_size: 32, train_subset: 128}
measure: {latency: false}
"""


def test_a_from_scratch_entry_starts_from_the_dense_runs_initialisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    assert [cell.key for cell in cells(suite)] == [
        "lenet300|gmp|0.5|0",
        "lenet300|magnitude|0.5|0",
        "lenet300|magnitude|0.5|1",
    ]
    starts: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    real = cells_module.prune_and_finetune

    def recording(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        starts[args[2].method, kwargs["seed"]] = {k: v.clone() for k, v in model.state_dict().items()}
        return real(model, *args, **kwargs)

    monkeypatch.setattr(cells_module, "prune_and_finetune", recording)
    runner.run_suite(path, tmp_path / "out")
    rows = {row.key: row for row in ResultsFile(tmp_path / "out" / "results.jsonl").read()}
    assert set(rows) == {
        "lenet300|dense|0|0",
        "lenet300|dense|0|1",
        "lenet300|gmp|0.5|0",
        "lenet300|magnitude|0.5|0",
        "lenet300|magnitude|0.5|1",
    }
    assert rows["lenet300|gmp|0.5|0"].train_epochs == 0.5  # the entry's own budget, not the suite's finetune
    assert rows["lenet300|gmp|0.5|0"].info("sparsity_pruned_layers") == pytest.approx(0.5)
    initial = build_initialized("lenet300", load_splits(suite.data), "default", 0)
    for name, value in initial.state_dict().items():
        assert torch.equal(starts["gmp", 0][name], value), name
    trained = cells_module.load_run(tmp_path / "out" / "dense" / "lenet300-seed0").model.state_dict()
    first = next(name for name in initial.state_dict() if name.endswith("weight"))
    assert not torch.equal(starts["magnitude", 0][first], initial.state_dict()[first])
    assert torch.equal(starts["magnitude", 0][first], trained[first])


def test_entry_seeds_must_be_suite_seeds(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.replace("seeds: [0], sparsities", "seeds: [3], sparsities"))
    with pytest.raises(ConfigError, match="not all suite seeds"):
        load_suite(path)
