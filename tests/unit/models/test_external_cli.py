"""External models from the CLI: train → prune (l2-filter) → eval / export / latency from the run
directory, for a timm model and a ``FILE.py:factory`` model on synthetic 3×64×64 data; recipes and
suites name them too; every bad reference is one line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from user_models import write_model_file, write_rgb_npz

from secateurs.cli import main
from secateurs.runs.directory import load_run
from secateurs.runtime.extras import available

pytestmark = pytest.mark.usefixtures("one_thread")
needs_timm = pytest.mark.skipif(not available("timm"), reason="timm is not installed (pip install 'secateurs[timm]')")
TRAIN = ["--steps", "2", "--batch-size", "16", "--no-latency"]
PRUNE = ["--method", "l2-filter", "--sparsity", "0.3", "--finetune-steps", "1", "--finetune-batch-size", "16"]
PRUNE += ["--calibration", "32", "--no-latency"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    path = write_rgb_npz(tmp_path_factory.mktemp("rgb") / "rgb64.npz")
    return ["--data", "npz", "--data-dir", str(path)]


def run_json(path: Path) -> dict[str, Any]:
    return json.loads((path / "run.json").read_text())


def eval_json(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["eval", str(run), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``; it must exit 2 with one error line on stderr (after any warnings), which is returned."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("secateurs: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert all("warning" in line or "using it anyway" in line for line in lines[:-1]), lines
    return errors[0]


def check_reloads(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """eval re-measures exactly what was recorded; latency records a measurement in run.json."""
    recorded = run_json(run)["metrics"]
    measured = eval_json(run, capsys)["measured"]
    for key in ("test_accuracy", "val_accuracy", "test_loss", "params", "nonzero_params", "macs"):
        assert measured[key] == recorded[key], key
    assert main(["latency", str(run), "--batch", "1", "--repeats", "2", "--warmup", "1"]) == 0
    assert run_json(run)["latency"]["torch"]["batch_1"]["repeats"] == 2


@needs_timm
def test_a_timm_model_trains_prunes_and_is_rebuilt_by_eval_export_and_latency(
    tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import timm

    dense, pruned = tmp_path / "dense", tmp_path / "pruned"
    name = "timm:mobilenetv3_small_050"
    assert main(["train", "--model", name, *data, *TRAIN, "--out", str(dense)]) == 0
    record = run_json(dense)
    spec = {"name": name, "input_shape": [3, 64, 64], "num_classes": 4, "timm_version": timm.__version__}
    assert record["model"] == spec
    assert record["config"]["model"] == name and "model_args" not in record["config"]
    assert record["train_steps"] == 2

    assert main(["prune", "--from", str(dense), *PRUNE, *data, "--out", str(pruned)]) == 0
    record = run_json(pruned)
    assert record["model"] == spec
    assert (pruned / "plan.json").is_file()
    metrics = record["metrics"]
    assert metrics["params"] < run_json(dense)["metrics"]["params"]
    assert abs(metrics["sparsity_params"] - 0.3) < 0.02
    check_reloads(pruned, capsys)

    capsys.readouterr()
    assert main(["export", str(pruned), "--format", "onnx", "--out", str(tmp_path / "pruned.onnx")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["onnxruntime_max_abs_error"] <= 1e-4
    assert json.loads(summary["metadata"]["secateurs.model"]) == spec
    assert (tmp_path / "pruned.onnx").stat().st_size == summary["bytes"]


def test_a_model_file_trains_prunes_and_is_rebuilt_through_its_recorded_hash(
    tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_model_file(tmp_path / "models")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    dense, pruned = tmp_path / "dense", tmp_path / "pruned"
    name = f"{path}:make"
    argv = ["train", "--model", name, "--model-arg", "width=6", *data, *TRAIN, "--out", str(dense)]
    assert main(argv) == 0
    spec = {
        "name": name,
        "input_shape": [3, 64, 64],
        "num_classes": 4,
        "args": {"width": 6},
        "file": str(path.resolve()),
        "sha256": digest,
    }
    record = run_json(dense)
    assert record["model"] == spec and record["config"]["model_args"] == {"width": 6}
    assert "sha256 " + digest in (dense / "log.txt").read_text()

    assert main(["prune", "--from", str(dense), *PRUNE, *data, "--out", str(pruned)]) == 0
    assert run_json(pruned)["model"] == spec
    run = load_run(pruned)
    assert type(run.model[-1]).__name__ == "Head"  # the nn.Linear subclass, pruned through its handler
    assert run.model[-1].in_features < 12
    check_reloads(pruned, capsys)
    assert main(["export", str(pruned), "--format", "onnx"]) == 0
    assert (tmp_path / "pruned.onnx").is_file()

    # The file changes (a comment): refused, unless --allow-changed-model; a pruned child records the new hash.
    path.write_text(path.read_text() + "\n# a comment\n")
    error = refused(["eval", str(pruned)], capsys)
    assert f"cannot rebuild its model: {path.resolve()} changed since the run was made" in error
    assert f"sha256 {digest[:12]}… recorded" in error and "--allow-changed-model" in error
    assert (
        eval_json(pruned, capsys, "--allow-changed-model")["measured"]["params"]
        == run_json(pruned)["metrics"]["params"]
    )
    again = tmp_path / "again"
    argv = ["prune", "--from", str(pruned), *PRUNE, *data, "--allow-changed-model", "--out", str(again)]
    assert main(argv) == 0
    assert run_json(again)["model"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["eval", str(again)]) == 0

    # The architecture changes: the weights no longer fit, even when the change is allowed.
    path.write_text(path.read_text().replace("2 * width", "3 * width"))
    error = refused(["eval", str(dense), "--allow-changed-model"], capsys)
    assert "model.safetensors does not match the model" in error and "recorded file sha256" in error
    error = refused(["export", str(dense), "--format", "onnx", "--allow-changed-model"], capsys)
    assert "does not match the model" in error
    assert not (tmp_path / "dense.onnx").exists()

    # The file is gone.
    path.unlink()
    error = refused(["latency", str(dense)], capsys)
    assert f"the model file {path} does not exist" in error
    error = refused(["prune", "--from", str(dense), *PRUNE, *data, "--out", str(tmp_path / "never")], capsys)
    assert "cannot rebuild its model" in error
    assert not (tmp_path / "never").exists() and not (tmp_path / ".never.partial").exists()


PACKAGE = """
from torch import nn


def build(num_classes, input_shape, hidden=16):
    channels, height, width = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
"""


def test_a_python_module_reference_that_no_longer_resolves(
    tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "user_cli_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    dense = tmp_path / "dense"
    argv = ["train", "--model", "python:user_cli_pkg.nets:build", "--model-arg", "hidden=5", *data, *TRAIN]
    assert main([*argv, "--out", str(dense)]) == 0
    assert run_json(dense)["model"]["args"] == {"hidden": 5}
    assert main(["eval", str(dense)]) == 0
    monkeypatch.delitem(sys.modules, "user_cli_pkg.nets")
    monkeypatch.delitem(sys.modules, "user_cli_pkg")
    sys.path.remove(str(tmp_path))
    error = refused(["eval", str(dense)], capsys)
    assert (
        "cannot rebuild its model: model 'python:user_cli_pkg.nets:build': no module named 'user_cli_pkg.nets'" in error
    )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param("timm:resnt10t", "unknown timm model 'resnt10t' (close matches: ", marks=needs_timm),
        ("python:absent_cli_pkg.nets:build", "no module named 'absent_cli_pkg.nets'"),
        ("{dir}/absent.py:make", "the model file {dir}/absent.py does not exist"),
        ("{dir}/models/user_net.py:mkae", "has no 'mkae'; close matches: make"),
        ("{dir}/models/user_net.py:returns_dict", "returned a dict with keys 'model', not a torch.nn.Module"),
        ("{dir}/models/user_net.py:two_heads", "returned a tuple of 2 (tensor (2, 4), tensor (2, 4))"),
        ("{dir}/models/user_net.py", "name the factory in the file too"),
    ],
)
def test_bad_references_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str], model: str, message: str
) -> None:
    write_model_file(tmp_path / "models")
    out = tmp_path / "run"
    error = refused(["train", "--model", model.format(dir=tmp_path), *data, *TRAIN, "--out", str(out)], capsys)
    assert message.format(dir=tmp_path) in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models"]


def test_malformed_model_args_are_refused(tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_model_file(tmp_path)
    base = ["train", "--model", f"{path}:make", *data, *TRAIN, "--out", str(tmp_path / "run")]
    assert "--model-arg expects KEY=VALUE" in refused([*base, "--model-arg", "width"], capsys)
    assert "--model-arg width is given twice" in refused(
        [*base, "--model-arg", "width=2", "--model-arg", "width=3"], capsys
    )
    error = refused(["train", "--model", "lenet5", "--model-arg", "width=2", *data, *TRAIN, "--out", "x"], capsys)
    assert "'lenet5' is a zoo model and takes no model args" in error
    assert not (tmp_path / "run").exists()


def test_list_models_shows_the_zoo_and_how_to_name_external_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "models"]) == 0
    shown = capsys.readouterr().out
    assert "resnet20 " in shown and "lenet5 " in shown
    for form in ("timm:NAME", "python:package.module:factory", "path/to/file.py:factory", "--model-arg KEY=VALUE"):
        assert form in shown


def test_recipes_and_suites_name_external_models_with_their_args(
    tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_model_file(tmp_path / "models")
    data_section = {"name": "npz", "dir": data[-1]}
    budget = {"steps": 2, "batch_size": 16}
    recipe = {
        "name": "file-model",
        "data": data_section,
        "model": f"{path}:make",
        "model_args": {"width": 4},
        "train": budget,
        "method": {"name": "l2-filter", "sparsity": 0.3},
        "finetune": {"steps": 1, "batch_size": 16},
        "calibration": {"size": 32},
        "measure": {"latency": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "recipe.yaml"), "--out-root", str(tmp_path / "runs")]) == 0
    for run in ("dense", "pruned"):
        recorded = run_json(tmp_path / "runs" / "file-model" / run)
        assert recorded["model"]["args"] == {"width": 4}
        assert recorded["model"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert run_json(tmp_path / "runs" / "file-model" / "dense")["recipe"]["model_args"] == {"width": 4}

    suite = {
        "name": "file-suite",
        "data": data_section,
        "models": [{"name": f"{path}:make", "args": {"width": 4}, "label": "usernet", "train": budget}],
        "methods": [{"name": "l2-filter"}],
        "sparsities": [0.3],
        "finetune": {"steps": 1, "batch_size": 16},
        "calibration": {"size": 32},
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert main(["bench", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "bench")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "bench" / "results.jsonl").read_text().splitlines()]
    assert sorted(row["key"] for row in rows) == ["usernet|dense|0|0", "usernet|l2-filter|0.3|0"]
    assert {row["model"] for row in rows} == {"usernet"}
    assert run_json(tmp_path / "bench" / "dense" / "usernet-seed0")["model"]["args"] == {"width": 4}

    suite["models"] = [{"name": f"{path}:mkae", "train": budget}]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(suite))
    error = refused(["bench", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "bad")], capsys)
    assert "has no 'mkae'; close matches: make" in error
    suite["models"] = [{"name": "timm:resnet18"}, {"name": "timm:resnet18", "args": {"drop_rate": 0.1}}]
    (tmp_path / "twice.yaml").write_text(yaml.safe_dump(suite))
    error = refused(["bench", str(tmp_path / "twice.yaml"), "--out", str(tmp_path / "twice")], capsys)
    assert "model labels must be unique; repeated: timm-resnet18 (add 'label')" in error
    assert not (tmp_path / "bad").exists() and not (tmp_path / "twice").exists()
