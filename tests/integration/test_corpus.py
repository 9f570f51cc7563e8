"""Replay every malformed file of ``tests/corpus/`` through the CLI: exit 2, one line, no traceback, nothing written.

Where each kind of file goes:

- ``recipe/*``: ``secateurs run FILE --out-root OUT``;
- ``suite/*``: ``secateurs bench FILE --out OUT``;
- ``idx/images-*`` / ``idx/labels-*``: replaces ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` of a
  valid MNIST-format folder, then ``secateurs train --data mnist --data-dir FOLDER``;
- ``cifar/*``: replaces ``data_batch_1.bin`` of a valid CIFAR-10 folder, then ``secateurs train --data cifar10``;
- ``run/*``: replaces ``run.json`` of a finished lenet300 run, then ``secateurs eval RUN``;
- ``plan/*``: becomes ``plan.json`` of a finished lenet5 run, then ``secateurs eval RUN``;
- ``safetensors/model-*`` / ``masks-*``: replaces ``model.safetensors`` / ``masks.safetensors`` of the lenet300
  run, then ``secateurs eval RUN``.

``python tests/corpus/generate.py`` regenerates the corpus.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from secateurs.cli import main
from secateurs.data.files import write_cifar_binary, write_idx
from secateurs.models import build_model
from secateurs.runs.directory import writing_run
from secateurs.runs.record import parse_record
from secateurs.sparsity.masks import MaskStore

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
VALID = CORPUS / "rundirs"
"""Run directories written by older secateurs: valid input (tests/unit/runs/test_migration.py), not malformed."""
FILES = sorted(
    path for path in CORPUS.rglob("*") if path.is_file() and path.suffix != ".py" and VALID not in path.parents
)
FRAGMENTS = {"plan": "plan.json", "safetensors": ".safetensors", "idx": "train-", "cifar": "data_batch_1.bin"}
"""What the one error line must mention, per kind (the file the CLI was reading)."""


def info(name: str) -> dict[str, Any]:
    return {
        "kind": "train",
        "seed": 0,
        "config": {"data": {"name": "synthetic", "dir": None}},
        "model": {"name": name, "input_shape": [1, 28, 28], "num_classes": 10},
        "preprocessing": {"mean": [0.5], "std": [0.25], "input_shape": [1, 28, 28]},
        "metrics": {"val_accuracy": 0.5, "test_accuracy": 0.5},
    }


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    torch.manual_seed(0)
    for name in ("lenet300", "lenet5"):
        model = build_model(name, (1, 28, 28), 10)
        masks = MaskStore(model)
        masks.set_("classifier.weight", torch.rand(model.classifier.weight.shape) < 0.5)
        with writing_run(root / name) as stage:
            stage.save_model(model)
            stage.save_masks(masks)
            stage.commit(parse_record(info(name)))
    rng = np.random.default_rng(0)
    (root / "idx").mkdir()
    for prefix, count in (("train", 24), ("t10k", 6)):
        images = rng.integers(0, 256, (count, 8, 8), dtype=np.uint8)
        write_idx(root / "idx" / f"{prefix}-images-idx3-ubyte", images, gzip=False)
        write_idx(root / "idx" / f"{prefix}-labels-idx1-ubyte", (np.arange(count) % 10).astype(np.uint8), gzip=False)
    cifar_images = rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    write_cifar_binary(root / "cifar", cifar_images, np.arange(12) % 10, num_classes=10)
    return {"lenet300": root / "lenet300", "lenet5": root / "lenet5", "idx": root / "idx", "cifar": root / "cifar"}


def command(corpus_file: Path, bases: dict[str, Path], work: Path) -> list[str]:
    """Put ``corpus_file`` where the CLI reads its kind; return the arguments that make the CLI read it."""
    kind, name = corpus_file.parent.name, corpus_file.name
    out = work / "out"
    if kind == "recipe":
        return ["run", str(corpus_file), "--out-root", str(out)]
    if kind == "suite":
        return ["bench", str(corpus_file), "--out", str(out)]
    train = ["train", "--model", "lenet300", "--epochs", "1", "--no-latency", "--out", str(out)]
    if kind == "idx":
        data = shutil.copytree(bases["idx"], work / "idx")
        target = "train-images-idx3-ubyte" if name.startswith("images-") else "train-labels-idx1-ubyte"
        shutil.copyfile(corpus_file, data / target)
        return [*train, "--data", "mnist", "--data-dir", str(data)]
    if kind == "cifar":
        data = shutil.copytree(bases["cifar"], work / "cifar")
        shutil.copyfile(corpus_file, data / "cifar-10-batches-bin" / "data_batch_1.bin")
        return [*train, "--data", "cifar10", "--data-dir", str(data)]
    run = shutil.copytree(bases["lenet5" if kind == "plan" else "lenet300"], work / "run")
    target = {"run": "run.json", "plan": "plan.json"}.get(kind) or name.split("-", 1)[0] + ".safetensors"
    shutil.copyfile(corpus_file, run / target)
    return ["eval", str(run)]


def test_the_corpus_is_large_and_small() -> None:
    assert len(FILES) >= 30
    assert {path.parent.name for path in FILES} == {"recipe", "suite", "idx", "cifar", "run", "plan", "safetensors"}
    assert all(path.stat().st_size < 64_000 for path in FILES)


@pytest.mark.parametrize("corpus_file", FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_malformed_input_is_one_clean_line(
    corpus_file: Path, bases: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = command(corpus_file, bases, tmp_path)
    threads = torch.get_num_threads()
    try:
        code = main(["--quiet", "--threads", "1", *argv])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("secateurs: error: "), err
    assert "Traceback" not in err
    fragment = FRAGMENTS.get(corpus_file.parent.name)
    assert fragment is None or fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # nothing written, not even a partial directory
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".out")]
