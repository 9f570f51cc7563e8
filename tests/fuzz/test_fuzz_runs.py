"""Fuzzing what a run directory is read from: run.json (`read_run`, `load_run`), plan.json (`replay_plan`)
and safetensors files (`load_tensors`, `tensor_shapes`, and `load_run` with damaged weights or masks)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fuzzing import fuzz_settings, json_values, loads_or_fails_cleanly, mutated, text_edits
from hypothesis import example, given
from hypothesis import strategies as st
from safetensors.torch import save as safetensors_bytes
from torch import nn

from secateurs.bench.results import parse_row
from secateurs.errors import RunDirError
from secateurs.io.files import load_tensors, tensor_shapes
from secateurs.models import build_model
from secateurs.runs.directory import load_run, read_run, writing_run
from secateurs.runs.record import parse_record
from secateurs.sparsity.masks import MaskStore
from secateurs.structure.plan import PLAN_FORMAT, replay_plan

INFO: dict[str, Any] = {
    "kind": "prune",
    "seed": 0,
    "config": {"data": {"name": "synthetic", "dir": None}},
    "model": {"name": "lenet300", "input_shape": [1, 8, 8], "num_classes": 3},
    "preprocessing": {"mean": [0.5], "std": [0.25], "input_shape": [1, 8, 8]},
    "metrics": {"val_accuracy": 0.5, "test_accuracy": 0.5},
    "history": [],
}


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished run: lenet300 on 1×8×8 inputs, three classes, a mask on its classifier."""
    out = tmp_path_factory.mktemp("fuzz") / "run"
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 3)
    masks = MaskStore(model)
    masks.set_("classifier.weight", torch.rand(3, 100) < 0.5)
    with writing_run(out) as stage:
        stage.save_model(model)
        stage.save_masks(masks)
        stage.commit(parse_record(copy.deepcopy(INFO)))
    return out


@pytest.fixture
def scratch(valid_run: Path) -> Iterator[Path]:
    """A function that gives a fresh copy of the valid run for each hypothesis example."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def fresh_copy(valid_run: Path, folder: Path) -> Path:
    target = folder / "run"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(valid_run, target)
    return target


def test_the_valid_run_loads(valid_run: Path) -> None:
    loaded = load_run(valid_run)
    assert loaded.masks is not None and loaded.masks.names() == ["classifier.weight"]


# ------------------------------------------------------------------------------------- run.json
@fuzz_settings()
@given(st.binary(max_size=300) | text_edits(json.dumps(INFO)).map(str.encode))
def test_run_json_from_bytes(valid_run: Path, scratch: Path, data: bytes) -> None:
    run = fresh_copy(valid_run, scratch)
    (run / "run.json").write_bytes(data)
    loads_or_fails_cleanly(lambda: read_run(run))
    loads_or_fails_cleanly(lambda: load_run(run))


@fuzz_settings()
@given(mutated(INFO, tuple(INFO)))
@example({**INFO, "model": {**INFO["model"], "input_shape": [1, 5000, 5000]}})  # found: a model of 7.5e9 weights
@example({**INFO, "model": {**INFO["model"], "num_classes": "3"}})  # found: int("x") escaped as ValueError
@example({**INFO, "model": {**INFO["model"], "input_shape": 8}})  # found: TypeError
@example({**INFO, "config": []})  # found: AttributeError reading config.data
def test_run_json_with_mutated_values(valid_run: Path, scratch: Path, info: dict[str, Any]) -> None:
    run = fresh_copy(valid_run, scratch)
    (run / "run.json").write_text(json.dumps(info))
    loads_or_fails_cleanly(lambda: load_run(run))


def test_deeply_nested_run_json_is_a_clean_error(valid_run: Path, tmp_path: Path) -> None:
    run = fresh_copy(valid_run, tmp_path)
    (run / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RunDirError, match="nested too deeply"):
        read_run(run)


ROW: dict[str, Any] = {
    "key": "lenet300|magnitude|0.5|0",
    "suite": "fuzz",
    "model": "lenet300",
    "method": "magnitude",
    "label": "magnitude",
    "sparsity": 0.5,
    "seed": 0,
    "metrics": {"test_accuracy": 0.9, "params": 10, "latency_ms": {"threads": 1, "batch_1": 0.1}},
    "before_finetune": {"test_accuracy": 0.8},
    "history": {"method": [], "finetune": []},
    "timings": {"wall_s": 1.0},
}


@fuzz_settings()
@given(mutated(ROW, (*ROW, "test_accuracy", "latency_ms", "batch_1", "method")) | json_values)
@example({**ROW, "schema_version": [2]})
def test_result_rows(row: Any) -> None:
    loads_or_fails_cleanly(lambda: parse_row(row))


# ------------------------------------------------------------------------------------ plan.json
class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3)
        self.b = nn.Conv2d(4, 6, 3)
        self.classifier = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(torch.relu(self.b(torch.relu(self.a(x)))), 1))


PLAN: dict[str, Any] = {
    "format": PLAN_FORMAT,
    "steps": [{"root": "a", "channels": 4, "removed": [1]}, {"root": "b", "channels": 6, "removed": [0, 5]}],
}
EXAMPLE_INPUT = torch.zeros(1, 1, 8, 8)


def test_the_valid_plan_replays() -> None:
    model = replay_plan(Tiny(), copy.deepcopy(PLAN), EXAMPLE_INPUT)
    assert (model.a.out_channels, model.b.out_channels, model.classifier.in_features) == (3, 4, 64)


@fuzz_settings()
@given(mutated(PLAN, ("format", "steps", "root", "channels", "removed")) | json_values)
@example({"format": PLAN_FORMAT, "steps": [{"root": "a", "channels": float("inf"), "removed": [1]}]})  # found
@example({"format": PLAN_FORMAT, "steps": [{"root": "a", "channels": 4, "removed": [float("inf")]}]})  # found
@example({"format": PLAN_FORMAT, "steps": [{"root": "", "channels": 4, "removed": [1]}]})
@example({**PLAN, "format": []})  # found: an unhashable format escaped as TypeError
def test_plan_json(plan: Any) -> None:
    loads_or_fails_cleanly(lambda: replay_plan(Tiny(), plan, EXAMPLE_INPUT))


@pytest.mark.parametrize(
    ("step", "fragment"),
    [  # found by the fuzzer: these used to replay, reading "12" as [1, 2], 1.5 as 1, true as 1, [1, 1] as [1]
        ({"root": "a", "channels": 4, "removed": "12"}, "removed (a list of integers)"),
        ({"root": "a", "channels": 4, "removed": [1.5]}, "removed (a list of integers)"),
        ({"root": "a", "channels": True, "removed": [0]}, "channels (an integer)"),
        ({"root": "a", "channels": 4, "removed": [1, 1]}, "must be distinct"),
        ({"root": "", "channels": 4, "removed": [1]}, "layer '' cannot be channel-pruned"),
    ],
)
def test_plan_steps_are_read_strictly(step: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RunDirError, match=re.escape(fragment)):
        replay_plan(Tiny(), {"format": PLAN_FORMAT, "steps": [step]}, EXAMPLE_INPUT)


# ---------------------------------------------------------------------------------- safetensors
VALID_TENSORS = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "m": torch.tensor([True, False])}


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    """A safetensors file with its header (JSON), header length or data damaged."""
    data = safetensors_bytes(VALID_TENSORS, metadata={"format": "pt"})
    (length,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8 : 8 + length]), data[8 + length :]
    kind = draw(st.sampled_from(["header", "length", "body", "bytes"]))
    if kind == "header":
        text = json.dumps(draw(mutated(header, ("dtype", "shape", "data_offsets", "__metadata__"))))
        return struct.pack("<Q", len(text)) + text.encode() + body
    if kind == "length":
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + data[8:]
    if kind == "body":
        return data[: 8 + length] + draw(st.binary(max_size=60))
    return draw(st.binary(max_size=120))


def write_and_load(folder: Path, data: bytes) -> None:
    path = folder / "file.safetensors"
    path.write_bytes(data)
    loads_or_fails_cleanly(lambda: load_tensors(path))
    loads_or_fails_cleanly(lambda: tensor_shapes(path))


@fuzz_settings()
@given(safetensors_files())
def test_safetensors_files(scratch: Path, data: bytes) -> None:
    write_and_load(scratch, data)


@fuzz_settings()
@given(st.sampled_from(["model.safetensors", "masks.safetensors"]), safetensors_files())
def test_run_with_damaged_weights_or_masks(valid_run: Path, scratch: Path, name: str, data: bytes) -> None:
    run = fresh_copy(valid_run, scratch)
    (run / name).write_bytes(data)
    loads_or_fails_cleanly(lambda: load_run(run))


@st.composite
def foreign_tensors(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    """Well-formed safetensors content that does not fit the model: other names, shapes and dtypes."""
    names = st.sampled_from(
        ["features.0.weight", "classifier.weight", "classifier.bias", "", "x.y", "features.9.weight"]
    )
    dtypes = st.sampled_from([torch.float32, torch.float16, torch.bool, torch.int64, torch.uint8])
    shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple) | st.sampled_from([(3, 100), (300, 64), (3,)])
    return {draw(names): torch.zeros(draw(shapes), dtype=draw(dtypes)) for _ in range(draw(st.integers(0, 4)))}


@fuzz_settings()
@given(st.sampled_from(["model.safetensors", "masks.safetensors"]), foreign_tensors())
def test_run_with_foreign_tensors(valid_run: Path, scratch: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    run = fresh_copy(valid_run, scratch)
    (run / name).write_bytes(safetensors_bytes(tensors))
    loads_or_fails_cleanly(lambda: load_run(run))
