"""``secateurs export --format onnx|csr`` and ``secateurs latency`` on run directories, and their bad inputs.

The runs are written directly (random masks, or channels removed with Torch-Pruning plus the plan that
replays it), so no training is needed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch_pruning as tp
from torch import nn

from conftest import assert_clean_error, run_cli
from secateurs.deploy.csr_file import load_csr_model
from secateurs.deploy.export_onnx import INPUT_NAME, onnxruntime_session
from secateurs.errors import RunDirError
from secateurs.models import build_model
from secateurs.runs.directory import load_run, writing_run
from secateurs.runs.record import History, Metrics, ModelSpec, Preprocessing, RunRecord
from secateurs.runs.update import record_latency
from secateurs.runtime.malloc import allocator_env_is_set
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.targets import prunable_names
from secateurs.structure.plan import parse_plan

PREPROCESSING = {
    "dataset": "fashion-mnist",
    "input_shape": [1, 28, 28],
    "mean": [0.286],
    "std": [0.353],
    "scale": "x / 255, then (x - mean) / std per channel",
}
QUICK = ["--batch", "1", "4", "--repeats", "2", "--warmup", "0", "--threads", "1"]


def write_run(
    out: Path, name: str, model: nn.Module, masks: MaskStore | None = None, plan: dict[str, Any] | None = None
) -> Path:
    with writing_run(out) as stage:
        stage.save_model(model)
        stage.save_masks(masks)
        stage.save_plan(parse_plan(plan) if plan is not None else None)
        stage.commit(
            RunRecord(
                kind="prune",
                model=ModelSpec(name=name, input_shape=[1, 28, 28], num_classes=10),
                preprocessing=Preprocessing.model_validate(PREPROCESSING),
                seed=0,
                metrics=Metrics(val_accuracy=0.5, params=1),
                history=History(method=[{"round": 1}]),
            )
        )
    return out


def masked_model(name: str, keep: float, seed: int = 0) -> tuple[nn.Module, MaskStore]:
    torch.manual_seed(seed)
    model = build_model(name, (1, 28, 28), 10)
    generator = torch.Generator().manual_seed(seed)
    store = MaskStore(model)
    for weight in prunable_names(model):
        store.set_(weight, torch.rand(model.get_parameter(weight).shape, generator=generator) < keep)
    return model, store


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deploy")
    lenet300, lenet300_masks = masked_model("lenet300", keep=0.05)
    lenet5, lenet5_masks = masked_model("lenet5", keep=0.1)
    torch.manual_seed(0)
    dense = build_model("lenet300", (1, 28, 28), 10)
    torch.manual_seed(0)
    pruned = build_model("lenet5", (1, 28, 28), 10)
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=torch.zeros(1, 1, 28, 28))
    steps = [("features.0", 6, [1, 4]), ("hidden.0", 120, list(range(0, 120, 4)))]
    for root_name, _, removed in steps:
        layer = pruned.get_submodule(root_name)
        pruner = graph.get_pruner_of_module(layer)
        graph.get_pruning_group(layer, pruner.prune_out_channels, removed).prune()
    plan = {
        "format": "secateurs-plan/1",
        "steps": [
            {"root": root_name, "channels": channels, "removed": removed} for root_name, channels, removed in steps
        ],
    }
    return {
        "masked": write_run(root / "l300-masked", "lenet300", lenet300, lenet300_masks),
        "conv": write_run(root / "lenet5-masked", "lenet5", lenet5, lenet5_masks),
        "dense": write_run(root / "l300-dense", "lenet300", dense),
        "pruned": write_run(root / "lenet5-pruned", "lenet5", pruned, plan=plan),
    }


def reference_output(run: Path, x: torch.Tensor) -> torch.Tensor:
    model = load_run(run).model  # plan replay traces with autograd: not under no_grad
    with torch.no_grad():
        return model(x)


def test_export_onnx_of_a_masked_run(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "export", str(runs["masked"]), "--format", "onnx")
    assert code == 0, err
    summary = json.loads(out)
    path = Path(summary["out"])
    assert path == runs["masked"].with_name("l300-masked.onnx") and path.is_file()
    assert summary["format"] == "onnx" and summary["checker"] == "passed"
    assert summary["onnxruntime_max_abs_error"] <= 1e-4 and summary["preprocessing"] == PREPROCESSING
    stored = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert json.loads(stored["secateurs.preprocessing"]) == PREPROCESSING
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    (found,) = onnxruntime_session(path).run(None, {INPUT_NAME: x.numpy()})
    assert float(np.max(np.abs(found - reference_output(runs["masked"], x).numpy()))) <= 1e-4


def test_export_onnx_of_a_physically_pruned_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pruned.onnx"
    code, _, err = run_cli(capsys, "export", str(runs["pruned"]), "--format", "onnx", "--out", str(out))
    assert code == 0, err
    model = load_run(runs["pruned"]).model
    assert model.get_submodule("features.0").out_channels == 4 and model.get_submodule("hidden.0").out_features == 90
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    (found,) = onnxruntime_session(out).run(None, {INPUT_NAME: x.numpy()})
    assert float(np.max(np.abs(found - reference_output(runs["pruned"], x).numpy()))) <= 1e-4


@pytest.mark.parametrize(("run", "threshold"), [("masked", None), ("conv", "0.5")])
def test_export_csr_round_trip(
    runs: dict[str, Path], run: str, threshold: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"{run}.csr.safetensors"
    extra = ["--set", f"density_threshold={threshold}"] if threshold else []
    code, stdout, err = run_cli(capsys, "export", str(runs[run]), "--format", "csr", "--out", str(out), *extra)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["density_threshold"] == (float(threshold) if threshold else 0.2)
    assert summary["csr_layers"] == len(summary["layers"]) and summary["dense_layers"] == 0
    assert summary["max_abs_error_vs_dense"] <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no staging file left
    loaded = load_csr_model(out)
    assert loaded.header["preprocessing"] == PREPROCESSING
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (loaded.model(x) - reference_output(runs[run], x)).abs().max() <= 1e-5


def test_csr_of_a_dense_run_is_refused(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dense.csr.safetensors"
    code, _, err = run_cli(capsys, "export", str(runs["dense"]), "--format", "csr", "--out", str(out))
    assert_clean_error(code, err, "nothing to gain", "density", "20 %")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    code, _, err = run_cli(capsys, "latency", str(runs["dense"]), "--runtime", "csr", *QUICK)
    assert_clean_error(code, err, "nothing to gain")


def test_a_plan_that_does_not_match_the_weights(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(runs["pruned"], broken)
    plan = json.loads((broken / "plan.json").read_text())
    plan["steps"][0]["removed"] = [1, 4, 5]  # the weights were saved with 4 channels, this replays to 3
    (broken / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(RunDirError, match=r"does not match the model: features\.0\.\w+ has shape \(4"):
        load_run(broken)
    code, _, err = run_cli(capsys, "export", str(broken), "--format", "onnx", "--out", str(tmp_path / "b.onnx"))
    assert_clean_error(code, err, "does not match the model", "features.0.")
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--format", "tflite"], ("unknown export format 'tflite'", "accepted: csr, onnx")),
        (["--format", "csr", "--set", "density=0.1"], ("density", "accepted: density_threshold")),
        (["--format", "csr", "--set", "density_threshold=1.5"], ("density_threshold",)),
    ],
)
def test_bad_export_requests(
    runs: dict[str, Path], argv: list[str], fragments: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "export", str(runs["masked"]), *argv)
    assert_clean_error(code, err, *fragments)


def without_latency(info: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in info.items() if key != "latency"}


def test_latency_records_each_runtime_and_keeps_the_rest(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["masked"], run)
    original = json.loads((run / "run.json").read_text())
    code, out, err = run_cli(capsys, "latency", str(run), *QUICK)
    assert code == 0, err
    assert "median ms" in out and "latency.torch" in out
    info = json.loads((run / "run.json").read_text())
    assert without_latency(info) == original
    entry = info["latency"]["torch"]
    assert entry["runtime"] == "torch" and entry["threads"] == 1 and entry["warmup"] == 0
    assert entry["allocator_env"] is allocator_env_is_set() and entry["channels_last"] is False
    assert entry["grad_mode"] == "inference_mode" and entry["input_shape"] == [1, 28, 28]
    for batch in ("batch_1", "batch_4"):
        assert entry[batch]["repeats"] == 2 and entry[batch]["median_ms"] <= entry[batch]["p90_ms"]
    code, out, err = run_cli(capsys, "latency", str(run), "--runtime", "csr", "--json", *QUICK)
    assert code == 0, err
    printed = json.loads(out)
    info = json.loads((run / "run.json").read_text())
    assert without_latency(info) == original and set(info["latency"]) == {"torch", "csr"}
    assert info["latency"]["torch"] == entry  # the earlier runtime's entry is kept
    assert info["latency"]["csr"] == printed and printed["grad_mode"] == "no_grad"
    assert printed["csr"]["csr_layers"] == 3 and printed["csr"]["density_threshold"] == 0.2


def test_latency_in_onnxruntime_of_a_conv_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["conv"], run)
    code, _, err = run_cli(capsys, "--threads", "2", "latency", str(run), "--runtime", "onnxruntime", *QUICK)
    assert code == 0, err
    entry = json.loads((run / "run.json").read_text())["latency"]["onnxruntime"]
    assert entry["threads"] == entry["intra_op_num_threads"] == 1  # the latency's --threads wins
    assert entry["inter_op_num_threads"] == 1 and entry["execution_mode"] == "sequential"
    assert entry["batch_4"]["repeats"] == 2
    code, _, err = run_cli(capsys, "latency", str(run), "--runtime", "torch", *QUICK)
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["latency"]["torch"]["channels_last"] is True


def test_latency_write_is_atomic(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["masked"], run)
    before = (run / "run.json").read_bytes()

    def failing_replace(source: Any, target: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("secateurs.io.files.os.replace", failing_replace)
    code, _, err = run_cli(capsys, "latency", str(run), *QUICK)
    assert code == 1 and "disk full" in err
    assert (run / "run.json").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in runs["masked"].iterdir())


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--runtime", "tensorrt"], ("unknown latency runtime 'tensorrt'", "accepted: csr, onnxruntime, torch")),
        (["--batch", "0"], ("batch sizes", "0")),
        (["--repeats", "0"], ("repeats",)),
        (["--threads", "0"], ("threads",)),
        (["--runtime", "csr", "--density-threshold", "2"], ("density threshold",)),
    ],
)
def test_bad_latency_requests(
    runs: dict[str, Path], argv: list[str], fragments: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    before = (runs["masked"] / "run.json").read_bytes()
    code, _, err = run_cli(capsys, "latency", str(runs["masked"]), *argv)
    assert_clean_error(code, err, *fragments)
    assert (runs["masked"] / "run.json").read_bytes() == before


def test_record_refuses_a_run_being_written(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["dense"], run)
    lock = run.with_name(".run.lock")
    lock.write_text(str(os.getppid()))  # a live process that is not us holds the lock
    try:
        with pytest.raises(RunDirError, match="being written by another secateurs process"):
            record_latency(run, "torch", {"x": 1})
    finally:
        lock.unlink()
    record = record_latency(run, "torch", {"x": 1})
    assert record.latency == {"torch": {"x": 1}}
    assert json.loads((run / "run.json").read_text())["latency"] == {"torch": {"x": 1}}
    (run / "run.json").write_text(json.dumps({**record.to_json(), "latency": [1]}))
    with pytest.raises(RunDirError, match=r"run.json: latency: Input should be a valid dictionary"):
        record_latency(run, "torch", {})
