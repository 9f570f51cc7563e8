"""The paper recipes run as written, given their data: here on a small generated CIFAR-10 folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from secateurs.api import run_recipe
from secateurs.config import load_recipe
from secateurs.data.files import write_cifar_binary

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "recipes" / "paper" / "hap-resnet56-cifar10.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_the_hap_paper_schedule_is_the_one_methods_md_gives() -> None:
    recipe = load_recipe(PAPER)
    assert recipe.model == "resnet56" and recipe.data.name == "cifar10"
    assert recipe.train is not None and recipe.finetune is not None and recipe.method is not None
    train, finetune = recipe.train, recipe.finetune
    assert (train.epochs, train.lr, train.weight_decay, train.batch_size) == (200, 0.1, 2e-4, 128)
    assert (train.schedule, train.milestones, train.augment) == ("step", (100, 150), "crop-flip")
    assert (finetune.epochs, finetune.lr, finetune.weight_decay, finetune.batch_size) == (120, 0.02, 4e-4, 64)
    assert (finetune.schedule, finetune.milestones) == ("step", (60, 90))
    method = recipe.method
    assert (method.method, method.sparsity, method.target, method.options["implant_ratio"]) == (
        "hap",
        0.5,
        "channels",
        0,
    )


def test_the_hap_paper_recipe_runs_on_a_cifar10_folder(tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, size=(96, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(96) % 10
    write_cifar_binary(tmp_path / "cifar", images, labels, num_classes=10)
    overrides = [
        f"data.dir={tmp_path / 'cifar'}",
        "data.split=tail",
        "train.epochs=1",
        "train.milestones=[0.5, 0.75]",
        "finetune.epochs=1",
        "finetune.milestones=[0.5, 0.75]",
        "method.options.probes=2",
        "method.options.min_probes=2",
        "calibration.size=16",
        "measure.latency=false",
    ]
    dense, pruned = run_recipe(PAPER, overrides, out_root=tmp_path / "runs")
    assert dense.kind == "train" and pruned.kind == "prune"
    assert pruned.method_info is not None
    assert pruned.method_info["realised"]["channels_removed"] == pytest.approx(0.5, abs=0.02)
    assert pruned.metrics.params is not None and dense.metrics.params is not None
    assert pruned.metrics.params < dense.metrics.params
    assert (tmp_path / "runs" / "hap-resnet56-cifar10" / "pruned" / "plan.json").is_file()
