"""``torchrun --nproc_per_node=2 -m secateurs train|prune`` on CPU (gloo) against one process.

Same global batch and seed: the two-process run ends within 0.5 accuracy points of the one-process run
(in fact within float rounding of its weights), magnitude masks pruned from the same dense run are
bit-identical, and rank 0 alone wrote a complete run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from secateurs.cli import main
from secateurs.io.files import load_tensors
from secateurs.runs.directory import is_run_dir

SOURCE = Path(__file__).resolve().parents[2] / "src"
TRAIN = ["--model", "lenet300", "--data", "synthetic", "--epochs", "2", "--batch-size", "32", "--lr", "0.05"]
PRUNE = ["--method", "magnitude", "--sparsity", "0.9", "--finetune-epochs", "1", "--finetune-batch-size", "32"]
COMMON = ["--no-latency", "--seed", "3"]
IMP = [
    "--method",
    "imp",
    "--sparsity",
    "0.75",
    "--rounds",
    "2",
    "--finetune-epochs",
    "1",
    "--finetune-batch-size",
    "32",
]


def torchrun(*argv: str) -> subprocess.CompletedProcess[str]:
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")]),
        "SECATEURS_NO_REEXEC": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [launcher, "--standalone", "--nproc_per_node=2", "-m", "secateurs", "--quiet", *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def one_process(*argv: str) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(["--quiet", "--threads", "1", *argv]) == 0
    finally:
        torch.set_num_threads(threads)


def run_json(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((path / "run.json").read_text())
    return info


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    one_process("train", *TRAIN, *COMMON, "--out", str(one / "dense"))
    one_process("prune", "--from", str(one / "dense"), *PRUNE, *COMMON, "--out", str(one / "pruned"))
    trained = torchrun("train", *TRAIN, *COMMON, "--out", str(two / "dense"))
    assert trained.returncode == 0, trained.stderr
    # Pruned from the *same* dense run as the one-process prune: magnitude then sees identical weights.
    pruned = torchrun("prune", "--from", str(one / "dense"), *PRUNE, *COMMON, "--out", str(two / "pruned"))
    assert pruned.returncode == 0, pruned.stderr
    one_process("prune", "--from", str(one / "dense"), *IMP, *COMMON, "--out", str(one / "imp"))
    iterative = torchrun("prune", "--from", str(one / "dense"), *IMP, *COMMON, "--out", str(two / "imp"))
    assert iterative.returncode == 0, iterative.stderr
    assert trained.stdout.count("train run dense") == 1  # rank 0 alone prints its summary
    return {"one": one, "two": two}


def test_two_processes_train_like_one(runs: dict[str, Path]) -> None:
    single, double = run_json(runs["one"] / "dense"), run_json(runs["two"] / "dense")
    for split in ("val_accuracy", "test_accuracy"):
        assert abs(single["metrics"][split] - double["metrics"][split]) <= 0.005, split
    assert (
        [r["step"] for r in double["history"]["train"]] == [r["step"] for r in single["history"]["train"]] == [34, 68]
    )
    for a, b in zip(single["history"]["train"], double["history"]["train"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    weights_one = load_tensors(runs["one"] / "dense" / "model.safetensors")
    weights_two = load_tensors(runs["two"] / "dense" / "model.safetensors")
    for name, value in weights_one.items():  # the same optimisation, up to float summation order
        assert torch.allclose(weights_two[name], value, atol=1e-5), name


def test_two_process_masks_equal_one_process_masks(runs: dict[str, Path]) -> None:
    masks_one = load_tensors(runs["one"] / "pruned" / "masks.safetensors")
    masks_two = load_tensors(runs["two"] / "pruned" / "masks.safetensors")
    assert sorted(masks_one) == sorted(masks_two) == ["classifier.weight", "features.0.weight", "features.2.weight"]
    for name, mask in masks_one.items():
        assert torch.equal(mask, masks_two[name]), name
    single, double = run_json(runs["one"] / "pruned"), run_json(runs["two"] / "pruned")
    assert double["metrics"]["nonzero_prunable"] == single["metrics"]["nonzero_prunable"]
    for split in ("val_accuracy", "test_accuracy"):
        assert abs(single["metrics"][split] - double["metrics"][split]) <= 0.005, split
    weights = load_tensors(runs["two"] / "pruned" / "model.safetensors")
    for name, mask in masks_two.items():
        assert int(torch.count_nonzero(weights[name][~mask])) == 0


def test_iterative_pruning_retrains_data_parallel_like_one_process(runs: dict[str, Path]) -> None:
    # IMP retrains inside the method: its rounds train data-parallel (global batch 32 split over 2 ranks)
    single, double = run_json(runs["one"] / "imp"), run_json(runs["two"] / "imp")
    rounds = [(r["round"], r["sparsity"]) for r in double["history"]["method"]]
    assert rounds == [(r["round"], r["sparsity"]) for r in single["history"]["method"]]
    assert [r["sparsity"] for r in double["history"]["method"]] == pytest.approx([0.5, 0.75], abs=1e-4)
    assert abs(single["metrics"]["test_accuracy"] - double["metrics"]["test_accuracy"]) <= 0.005
    masks_one = load_tensors(runs["one"] / "imp" / "masks.safetensors")
    masks_two = load_tensors(runs["two"] / "imp" / "masks.safetensors")
    differing = sum(int((masks_one[name] != masks_two[name]).sum()) for name in masks_one)
    assert differing <= 0.001 * sum(mask.numel() for mask in masks_one.values())  # float-order ties only


def test_rank_0_alone_wrote_complete_run_directories(runs: dict[str, Path]) -> None:
    assert sorted(os.listdir(runs["two"])) == ["dense", "imp", "pruned"]  # no partial dirs, no lock files
    for name in ("dense", "pruned"):
        assert is_run_dir(runs["two"] / name)
        assert not (runs["two"] / name / "checkpoint").exists()
    assert run_json(runs["two"] / "pruned")["parent"] == str(runs["one"] / "dense")


def test_commands_that_do_not_run_data_parallel_are_refused(tmp_path: Path) -> None:
    result = torchrun("list", "methods")
    assert result.returncode != 0
    message = "secateurs: error: 'list' does not run under torchrun; accepted there: train, prune, run"
    assert result.stderr.count(message) == 2  # one line from each rank
    assert "secateurs/" not in result.stderr  # no traceback from the package (torchrun adds its own report)
