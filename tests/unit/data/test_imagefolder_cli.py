"""`secateurs train --data imagefolder`: one short run into a run directory, then eval and prune from it;
bad folders and misplaced options are one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from image_folders import CLASSES, write_folder

from secateurs.cli import main
from secateurs.data.imagefolder import ImageFolderOptions, load_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_eval_and_prune_on_an_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path / "images", per_class=12)
    run = tmp_path / "run"
    argv = ["--quiet", "train", "--model", "lenet300", "--data", "imagefolder", "--data-dir", str(folder)]
    argv += ["--image-size", "8", "--epochs", "1", "--batch-size", "8", "--no-latency", "--out", str(run)]
    assert main(argv) == 0
    info = json.loads((run / "run.json").read_text())
    expected = load_image_folder(folder, ImageFolderOptions(image_size=8))
    preprocessing = info["preprocessing"]
    assert preprocessing["input_shape"] == [3, 8, 8] and preprocessing["image_size"] == 8
    assert preprocessing["classes"] == list(CLASSES) and preprocessing["channels"] == 3
    assert preprocessing["mean"] == list(expected.mean) and preprocessing["std"] == list(expected.std)
    assert info["config"]["data"]["image_size"] == 8 and info["config"]["data"]["split"] == "stratified"
    split = info["split"]
    assert split["kind"] == "stratified" and split["seed"] == 0
    assert split["sizes"] == {"train": 35, "val": 3, "test": 6}  # 38 readable training images, 38 // 12 = 3
    assert split["val_classes"] == [1, 1, 1] and split["train_classes"] == [12, 11, 12]
    assert info["train_steps"] == 4 and info["train_epochs"] == 1.0  # 35 // 8 batches
    capsys.readouterr()

    assert main(["eval", str(run), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)["measured"]
    assert measured["val_accuracy"] == info["metrics"]["val_accuracy"]
    pruned = tmp_path / "pruned"
    prune = ["--quiet", "prune", "--from", str(run), "--method", "magnitude", "--sparsity", "0.5"]
    prune += ["--finetune-steps", "3", "--finetune-batch-size", "8", "--no-latency", "--out", str(pruned)]
    assert main(prune) == 0
    pruned_info = json.loads((pruned / "run.json").read_text())
    assert pruned_info["train_steps"] == 3 and pruned_info["train_epochs"] == pytest.approx(3 / 4)
    assert pruned_info["split"] == split and pruned_info["config"]["data"] == info["config"]["data"]


def test_bad_image_folders_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path / "images", extras=False)
    (folder / "test" / "bird").mkdir()
    common = ["train", "--model", "lenet300", "--epochs", "1", "--no-latency", "--out", str(tmp_path / "run")]
    assert main([*common, "--data", "imagefolder", "--data-dir", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "its classes differ" in error and "extra bird" in error
    assert not (tmp_path / "run").exists()
    assert main([*common, "--data", "synthetic", "--image-size", "16"]) == 2
    assert "data.image_size applies to imagefolder only" in capsys.readouterr().err
    assert main([*common, "--data", "synthetic", "--steps", "3"]) == 2
    assert "either in epochs (1.0) or in steps (3), not both" in capsys.readouterr().err
