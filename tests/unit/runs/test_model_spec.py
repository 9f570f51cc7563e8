"""run.json's ``model``: the optional fields of external models keep schema-2 files readable unchanged,
round trip exactly, are validated, and `load_run` rebuilds the model they name (or says why not)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from secateurs.errors import RunDirError
from secateurs.runs.directory import load_run, writing_run
from secateurs.runs.record import parse_record

MODEL_FILE = """
from torch import nn


def make(num_classes, in_channels, hidden=6):
    layers = [nn.Flatten(), nn.Linear(in_channels * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)
"""


def raw(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": 2,
        "kind": "train",
        "model": model,
        "preprocessing": {"mean": [0.5], "std": [0.25]},
        "seed": 0,
        "metrics": {"val_accuracy": 0.5},
    }


def test_a_zoo_spec_is_written_as_before_and_external_fields_round_trip() -> None:
    zoo = {"name": "lenet5", "input_shape": [1, 28, 28], "num_classes": 10}
    assert parse_record(raw(zoo)).to_json()["model"] == zoo  # no new keys, no nulls
    external = {
        "name": "models/net.py:make",
        "input_shape": [3, 64, 64],
        "num_classes": 4,
        "args": {"width": 6, "act": "relu", "dims": [1, 2]},
        "file": "/abs/models/net.py",
        "sha256": "0" * 64,
    }
    assert parse_record(raw(external)).to_json()["model"] == external
    timm = {"name": "timm:resnet10t", "input_shape": [3, 64, 64], "num_classes": 4, "timm_version": "1.0.31"}
    assert parse_record(raw(timm)).to_json()["model"] == timm


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "abc"}, "model.sha256"),
        ({"args": [1, 2]}, "model.args"),
        ({"origin": "x"}, "model.origin"),
    ],
)
def test_bad_external_fields_are_one_run_dir_error(change: dict[str, Any], message: str) -> None:
    model = {"name": "timm:resnet10t", "input_shape": [3, 64, 64], "num_classes": 4, **change}
    with pytest.raises(RunDirError, match=message):
        parse_record(raw(model))


def write(out: Path, model: nn.Module, spec: dict[str, Any]) -> None:
    with writing_run(out) as stage:
        stage.save_model(model)
        stage.commit(parse_record(raw(spec)))


def test_load_run_rebuilds_a_model_file_and_refuses_args_a_zoo_model_does_not_take(tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    path.write_text(MODEL_FILE)
    spec = {
        "name": f"{path}:make",
        "input_shape": [1, 4, 4],
        "num_classes": 3,
        "args": {"hidden": 5},
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3))
    write(tmp_path / "run", model, spec)
    run = load_run(tmp_path / "run")
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(run.model(x), model.eval()(x))
    assert run.provenance.sha256 == spec["sha256"]

    document = json.loads((tmp_path / "run" / "run.json").read_text())
    document["model"]["args"] = {"hidden": 7}  # args the weights do not fit
    (tmp_path / "run" / "run.json").write_text(json.dumps(document))
    with pytest.raises(RunDirError, match=r"model.safetensors does not match the model .*net.py:make .*: 1.weight has"):
        load_run(tmp_path / "run")

    zoo = {"name": "lenet300", "input_shape": [1, 28, 28], "num_classes": 10, "args": {"hidden": 5}}
    write(tmp_path / "zoo", nn.Linear(1, 1), zoo)
    with pytest.raises(
        RunDirError, match="cannot rebuild its model: model 'lenet300' is a zoo model and takes no model"
    ):
        load_run(tmp_path / "zoo")
