"""The CLI end to end on the synthetic dataset, and every bad input of issue 2 (exit 2, one line, nothing left)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_clean_error, assert_nothing_written, run_cli
from secateurs.cli import main
from secateurs.data.files import write_idx
from secateurs.io.files import load_tensors
from secateurs.runs.directory import is_run_dir, load_run


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "dense"
    assert (
        main(
            [
                "--quiet",
                "train",
                "--model",
                "lenet300",
                "--data",
                "synthetic",
                "--epochs",
                "2",
                "--batch-size",
                "32",
                "--lr",
                "0.05",
                "--out",
                str(out),
                "--no-latency",
            ]
        )
        == 0
    )
    return out


def test_train_writes_a_complete_run_directory(dense_run: Path) -> None:
    assert is_run_dir(dense_run)
    info = json.loads((dense_run / "run.json").read_text())
    assert info["kind"] == "train"
    assert info["model"] == {"name": "lenet300", "input_shape": [1, 28, 28], "num_classes": 10}
    metrics = info["metrics"]
    assert metrics["params"] == 266_610 and metrics["nonzero_params"] > 266_000
    assert metrics["macs"] == 784 * 300 + 300 * 100 + 100 * 10
    assert metrics["sparsity_prunable"] == 0.0
    assert metrics["val_accuracy"] > 0.9  # the synthetic data is easy; chance is 0.1
    assert info["schema_version"] == 2 and info["parent"] is None
    assert len(info["history"]["train"]) == 2 and info["history"]["train"][-1]["epoch"] == 2
    assert set(info["preprocessing"]) >= {"mean", "std", "input_shape"}
    assert (dense_run / "log.txt").read_text().count("epoch") >= 2
    assert not (dense_run / "checkpoint").exists()


def test_prune_finetune_eval_round_trip(dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mag90"
    code, stdout, err = run_cli(
        capsys,
        "prune",
        "--from",
        str(dense_run),
        "--method",
        "magnitude",
        "--sparsity",
        "0.9",
        "--scope",
        "global",
        "--finetune-epochs",
        "1",
        "--finetune-lr",
        "0.01",
        "--out",
        str(out),
        "--no-latency",
    )
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    prunable = 784 * 300 + 300 * 100 + 100 * 10
    assert info["metrics"]["nonzero_prunable"] == prunable - round(0.9 * prunable)
    assert info["metrics"]["sparsity_prunable"] == pytest.approx(0.9, abs=1e-6)
    assert info["parent"] == str(dense_run)
    masks = load_tensors(out / "masks.safetensors")
    weights = load_tensors(out / "model.safetensors")
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert torch.count_nonzero(weights[name][~mask]) == 0  # pruned weights stayed zero through fine-tuning
    code, stdout, err = run_cli(capsys, "eval", str(out), "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["measured"]["test_accuracy"] == pytest.approx(report["recorded"]["test_accuracy"], abs=1e-9)
    assert report["measured"]["nonzero_prunable"] == info["metrics"]["nonzero_prunable"]
    reloaded = load_run(out)
    assert reloaded.masks is not None and reloaded.masks.sparsity() == pytest.approx(0.9, abs=1e-5)


def test_list_names_registered_things(capsys: pytest.CaptureFixture[str]) -> None:
    for what, expected in (("methods", "magnitude"), ("models", "resnet20"), ("datasets", "fashion-mnist")):
        code, stdout, _ = run_cli(capsys, "list", what)
        assert code == 0 and expected in stdout
    code, stdout, _ = run_cli(capsys, "list", "scorers")
    assert code == 0 and "\nlap " in stdout  # per-weight scorers, then the channel criteria and their methods
    lines = stdout.strip().splitlines()
    kinds = [line.split()[1] for line in lines if line and not line.startswith("channel criteria")]
    assert kinds == sorted(kinds, key=lambda kind: kind != "[weights]") and "[channels]" in kinds
    assert any(line.startswith("l2 ") and "[channels]" in line for line in lines)
    last = lines[-1]
    assert last.startswith("channel criteria are used by the structured methods") and "l2-filter (l2)" in last


def test_recipe_runs_train_then_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: tiny\ndata: {name: synthetic}\nmodel: lenet300\ntrain: {epochs: 1}\n"
        "method: {name: random, sparsity: 0.5}\nfinetune: {epochs: 0.5}\nmeasure: {latency: false}\n"
    )
    code, _, err = run_cli(
        capsys, "run", str(recipe), "--out-root", str(tmp_path / "runs"), "--set", "method.sparsity=0.75"
    )
    assert code == 0, err
    pruned = json.loads((tmp_path / "runs" / "tiny" / "pruned" / "run.json").read_text())
    assert pruned["config"]["method"]["sparsity"] == 0.75
    assert pruned["metrics"]["sparsity_prunable"] == pytest.approx(0.75, abs=1e-5)
    assert is_run_dir(tmp_path / "runs" / "tiny" / "dense")


# ------------------------------------------------------------------------------------ bad input
def _idx_dir(root: Path, *, images: int = 20, labels: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(
            root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (images, 28, 28), dtype=np.uint8), gzip=True
        )
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, labels, dtype=np.uint8), gzip=True)
    return root


def _train_on(capsys: pytest.CaptureFixture[str], data_dir: Path, out: Path) -> tuple[int, str, str]:
    return run_cli(
        capsys,
        "train",
        "--model",
        "lenet300",
        "--data",
        "mnist",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "1",
        "--out",
        str(out),
    )


def test_missing_gz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _idx_dir(tmp_path / "data")
    (data / "train-labels-idx1-ubyte.gz").unlink()
    code, _, err = _train_on(capsys, data, tmp_path / "out")
    assert_clean_error(code, err, "train-labels-idx1-ubyte", "--data-dir")
    assert_nothing_written(tmp_path / "out")


def test_truncated_gz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _idx_dir(tmp_path / "data")
    path = data / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, _, err = _train_on(capsys, data, tmp_path / "out")
    assert_clean_error(code, err, "train-images-idx3-ubyte.gz")
    assert_nothing_written(tmp_path / "out")


def test_wrong_magic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _idx_dir(tmp_path / "data")
    path = data / "t10k-images-idx3-ubyte.gz"
    import gzip

    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[0] = 7
    path.write_bytes(gzip.compress(bytes(raw)))
    code, _, err = _train_on(capsys, data, tmp_path / "out")
    assert_clean_error(code, err, "t10k-images-idx3-ubyte.gz", "magic")
    assert_nothing_written(tmp_path / "out")


def test_image_label_count_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _idx_dir(tmp_path / "data", images=20, labels=19)
    code, _, err = _train_on(capsys, data, tmp_path / "out")
    assert_clean_error(code, err, "20", "19")
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    ("flag", "value", "accepted"),
    [("--model", "resnet21", "resnet20"), ("--data", "imagenet", "fashion-mnist")],
)
def test_unknown_model_or_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, accepted: str
) -> None:
    args = {"--model": "lenet300", "--data": "synthetic", flag: value}
    code, _, err = run_cli(
        capsys,
        "train",
        "--model",
        args["--model"],
        "--data",
        args["--data"],
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "out"),
    )
    assert_clean_error(code, err, value, accepted)
    assert_nothing_written(tmp_path / "out")


def test_unknown_method(dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys,
        "prune",
        "--from",
        str(dense_run),
        "--method",
        "magnitud",
        "--sparsity",
        "0.5",
        "--out",
        str(tmp_path / "out"),
    )
    assert_clean_error(code, err, "magnitud", "magnitude")
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("sparsity", ["1.0", "-0.1", "1.5", "nan"])
def test_sparsity_outside_range(
    dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sparsity: str
) -> None:
    code, _, err = run_cli(
        capsys,
        "prune",
        "--from",
        str(dense_run),
        "--method",
        "magnitude",
        "--sparsity",
        sparsity,
        "--out",
        str(tmp_path / "out"),
    )
    assert_clean_error(code, err, "[0, 1)")
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\nmodel: lenet300\ntrain: {epochs: 1, learning_rate: 0.1}\n", "learning_rate"),
        ("name: x\nmodel: lenet300\ntrain: {epochs: many}\n", "epochs"),
        (
            "name: x\nmodel: lenet300\ntrain: {epochs: 1}\nmethod: {name: magnitude, sparsity: 0.5}\nfinetun: {}\n",
            "finetun",
        ),
    ],
)
def test_bad_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    code, _, err = run_cli(capsys, "run", str(recipe), "--out-root", str(tmp_path / "runs"))
    assert_clean_error(code, err, fragment)
    assert not (tmp_path / "runs").exists()


def test_from_is_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        capsys,
        "prune",
        "--from",
        str(tmp_path / "empty"),
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--out",
        str(tmp_path / "out"),
    )
    assert_clean_error(code, err, "not a run directory")
    assert_nothing_written(tmp_path / "out")


def test_weights_that_do_not_match_the_model(
    dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(dense_run, broken)
    weights = load_tensors(broken / "model.safetensors")
    weights["features.0.weight"] = torch.zeros(299, 784)  # one unit short
    save_file({k: v.contiguous() for k, v in weights.items()}, str(broken / "model.safetensors"))
    code, _, err = run_cli(
        capsys,
        "prune",
        "--from",
        str(broken),
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--out",
        str(tmp_path / "out"),
    )
    assert_clean_error(code, err, "does not match", "features.0.weight", "(299, 784)", "(300, 784)")
    assert_nothing_written(tmp_path / "out")


def test_out_holding_a_finished_run_is_refused(dense_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (dense_run / "model.safetensors").read_bytes()
    code, _, err = run_cli(
        capsys, "train", "--model", "lenet300", "--data", "synthetic", "--epochs", "1", "--out", str(dense_run)
    )
    assert_clean_error(code, err, "already holds a finished run", "--overwrite")
    assert (dense_run / "model.safetensors").read_bytes() == before


def test_bad_option_value_names_the_key(dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys,
        "prune",
        "--from",
        str(dense_run),
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--option",
        "bogus=1",
        "--out",
        str(tmp_path / "out"),
    )
    assert_clean_error(code, err, "bogus")
    assert_nothing_written(tmp_path / "out")
