"""Run directories and atomic files: publish on commit only, refusals, locks, validation, round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from secateurs.errors import ConfigError, RunDirError
from secateurs.io import files
from secateurs.io.files import atomic_write_json, load_tensors, read_json, save_tensors
from secateurs.runs.directory import load_run, read_run, writing_run
from secateurs.runs.record import Metrics, RunRecord, parse_record
from secateurs.sparsity.masks import MaskStore


class Net(nn.Module):
    def __init__(self, hidden: int = 6) -> None:
        super().__init__()
        self.a = nn.Linear(4, hidden)
        self.b = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def info(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "kind": "prune",
        "model": {"name": "custom", "input_shape": [4], "num_classes": 3},
        "preprocessing": {"mean": None, "std": None},
        "seed": 0,
        "metrics": {"val_accuracy": 0.5},
    }
    raw.update(changes)
    return raw


def record(**changes: Any) -> RunRecord:
    return parse_record(info(**changes))


def write_run(out: Path, model: nn.Module, masks: MaskStore | None = None, **kwargs: Any) -> RunRecord:
    with writing_run(out, **kwargs) as stage:
        stage.save_model(model)
        stage.save_masks(masks)
        return stage.commit(record())


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# -------------------------------------------------------------------------------- publish on commit
def test_commit_publishes_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with writing_run(out) as stage:
        assert stage.path == tmp_path / ".run.partial" and stage.path.is_dir()
        assert listing(tmp_path) == [".run.lock", ".run.partial"]
        stage.checkpoint_dir.mkdir()
        (stage.checkpoint_dir / "x").write_text("checkpoint")
        stage.save_model(Net())
        published = stage.commit(record())
    assert listing(tmp_path) == ["run"]
    assert listing(out) == ["log.txt", "model.safetensors", "run.json"]  # checkpoints dropped
    assert json.loads((out / "run.json").read_text()) == published.to_json()
    assert read_run(out) == published
    assert published.name == "run" and published.seed == 0 and published.versions is not None
    assert published.versions.torch == torch.__version__ and published.schema_version == 2
    assert "files: " in (out / "log.txt").read_text()  # the log ends with what was published


def test_another_exception_keeps_the_partial_for_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"), writing_run(out) as stage:
        stage.save_model(Net())
        raise RuntimeError("crash")
    assert listing(tmp_path) == [".run.partial"]  # no out, no lock
    assert listing(tmp_path / ".run.partial") == ["log.txt", "model.safetensors"]
    with writing_run(out, resume=True) as stage:
        assert stage.resumed and (stage.path / "model.safetensors").is_file()
        stage.commit(record())
    assert listing(tmp_path) == ["run"]


def test_without_resume_a_stale_partial_is_discarded(tmp_path: Path) -> None:
    stale = tmp_path / ".run.partial"
    stale.mkdir()
    (stale / "junk").write_text("old")
    with writing_run(tmp_path / "run") as stage:
        assert not stage.resumed and listing(stage.path) == ["log.txt"]
        stage.save_model(Net())
        stage.commit(record())


def test_a_usage_error_removes_the_staging_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="bad option"), writing_run(out) as stage:
        stage.save_model(Net())
        raise ConfigError("bad option")
    assert listing(tmp_path) == []


def test_leaving_without_commit_publishes_nothing(tmp_path: Path) -> None:
    with writing_run(tmp_path / "run") as stage:
        stage.save_model(Net())
    assert listing(tmp_path) == []


def test_commit_without_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"no model.safetensors was written"), writing_run(tmp_path / "run") as stage:
        stage.commit(record())
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------- refusals
def test_a_finished_run_is_refused_without_overwrite_and_replaced_with_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = Net()
    write_run(out, first)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="already holds a finished run; pass --overwrite to replace it"):
        write_run(out, Net(hidden=5))
    assert (out / "model.safetensors").read_bytes() == before
    assert listing(tmp_path) == ["run"]
    write_run(out, Net(hidden=5), overwrite=True)
    assert load_tensors(out / "model.safetensors")["a.weight"].shape == (5, 4)
    assert listing(tmp_path) == ["run"]  # no trash left behind


def test_out_that_is_not_a_run_dir_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="exists and is not a run directory; refusing to replace it"):
        write_run(folder, Net(), overwrite=True)
    assert listing(folder) == ["precious.txt"]
    plain_file = tmp_path / "file"
    plain_file.write_text("x")
    with pytest.raises(RunDirError, match="is not a run directory"):
        write_run(plain_file, Net(), overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_run(empty, Net())  # an empty directory is fine
    assert listing(empty) == ["log.txt", "model.safetensors", "run.json"]


# ------------------------------------------------------------------------------------------- locks
def test_a_live_lock_holder_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".run.lock").write_text(str(holder.pid))
        with pytest.raises(RunDirError, match=rf"being written by another secateurs process \(pid {holder.pid}\)"):
            write_run(tmp_path / "run", Net())
        assert listing(tmp_path) == [".run.lock"]
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(finished.stdout)
    (tmp_path / ".run.lock").write_text(str(dead_pid))
    with writing_run(tmp_path / "run") as stage:
        assert (tmp_path / ".run.lock").read_text() == str(os.getpid())
        stage.save_model(Net())
        stage.commit(record())
    assert listing(tmp_path) == ["run"]


def test_a_garbled_lock_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / ".run.lock").write_text("not a pid")
    write_run(tmp_path / "run", Net())
    assert listing(tmp_path) == ["run"]


# -------------------------------------------------------------------------------------- validation
def test_read_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="is not a run directory \\(it does not exist or is not a directory\\)"):
        read_run(tmp_path / "missing")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(RunDirError, match=r"is not a run directory: it has no run.json"):
        read_run(bare)
    (bare / "run.json").write_text('{"kind": "train",\n "model": }')
    with pytest.raises(RunDirError, match=r"run.json .* is not valid JSON \(Expecting value at line 2\)"):
        read_run(bare)
    (bare / "run.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="must hold a JSON object"):
        read_run(bare)
    partial = info()
    del partial["seed"], partial["metrics"]
    (bare / "run.json").write_text(json.dumps(partial))
    with pytest.raises(RunDirError, match=r"run.json lacks seed, metrics"):
        read_run(bare)
    (bare / "run.json").write_text(json.dumps(info(model={"name": "x"})))
    with pytest.raises(RunDirError, match="'model' needs name, input_shape and num_classes"):
        read_run(bare)
    (bare / "run.json").write_text(json.dumps(info()))
    assert read_run(bare).metrics == Metrics(val_accuracy=0.5)


def masked_net() -> tuple[Net, MaskStore, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = Net()
    generator = torch.Generator().manual_seed(3)
    masks = {name: torch.rand(model.get_parameter(name).shape, generator=generator) < 0.5 for name in ("a.weight",)}
    masks["b.weight"] = torch.ones(3, 6, dtype=torch.bool)
    masks["b.weight"][0] = False
    store = MaskStore(model)
    store.update_(masks)
    return model, store, masks


def test_load_run_round_trips_a_masked_model(tmp_path: Path) -> None:
    model, store, masks = masked_net()
    write_run(tmp_path / "run", model, store)
    assert listing(tmp_path / "run") == ["log.txt", "masks.safetensors", "model.safetensors", "run.json"]
    loaded = load_run(tmp_path / "run", Net)
    assert loaded.masks is not None and sorted(loaded.masks.names()) == ["a.weight", "b.weight"]
    for name, mask in masks.items():
        assert torch.equal(loaded.masks.get(name), mask)
        assert torch.equal(loaded.model.get_parameter(name.replace("weight", "parametrizations.weight.original")),
                           store.original(name))  # fmt: skip
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.model(x), model(x))
    assert not loaded.model.training
    assert loaded.record.model.input_shape == [4] and loaded.plan is None


def test_load_run_of_another_model_names_the_key(tmp_path: Path) -> None:
    write_run(tmp_path / "run", Net(hidden=6))
    with pytest.raises(RunDirError, match=r"model.safetensors does not match the model: a.bias has shape \(6,\), "
                       r"the model expects \(5,\)"):  # fmt: skip
        load_run(tmp_path / "run", lambda: Net(hidden=5))
    with pytest.raises(RunDirError, match=r"does not match the model: missing c.bias, c.weight"):
        load_run(tmp_path / "run", lambda: nn.ModuleDict({"a": Net().a, "b": Net().b, "c": nn.Linear(1, 1)}))


def test_load_run_with_masks_of_another_model(tmp_path: Path) -> None:
    model, store, _ = masked_net()
    write_run(tmp_path / "run", model, store)
    (tmp_path / "run" / "model.safetensors").unlink()
    save_tensors(tmp_path / "run" / "model.safetensors", Net(hidden=5).state_dict())
    with pytest.raises(RunDirError, match=r"masks.safetensors does not match the model: .*a.weight"):
        load_run(tmp_path / "run", lambda: Net(hidden=5))


def test_truncated_safetensors_is_a_run_dir_error(tmp_path: Path) -> None:
    write_run(tmp_path / "run", Net())
    path = tmp_path / "run" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match=r"model.safetensors is not a valid safetensors file"):
        load_run(tmp_path / "run", Net)
    path.write_bytes(b"")
    with pytest.raises(RunDirError, match="is not a valid safetensors file"):
        load_tensors(path)
    with pytest.raises(RunDirError, match=r"weights file .*nothing.safetensors does not exist"):
        load_tensors(tmp_path / "nothing.safetensors")


# ---------------------------------------------------------------------------------------- files
def test_atomic_json_leaves_no_temp_files_and_respects_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "a.json"
    atomic_write_json(path, {"x": 1.5, "nan": float("nan"), "path": Path("/p"), "tuple": (1, 2)})
    assert listing(path.parent) == ["a.json"]
    assert read_json(path) == {"x": 1.5, "nan": None, "path": "/p", "tuple": [1, 2]}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask == files.FILE_MODE
    save_tensors(tmp_path / "t.safetensors", {"w": torch.ones(2)})
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert listing(tmp_path) == ["deep", "t.safetensors"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    atomic_write_json(path, {"version": 1})

    def failing_replace(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"version": 2})
    with pytest.raises(OSError, match="disk full"):
        save_tensors(tmp_path / "t.safetensors", {"w": torch.ones(2)})
    monkeypatch.undo()
    assert listing(tmp_path) == ["a.json"]
    assert read_json(path) == {"version": 1}
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        atomic_write_json(path, {"x": object()})
    assert listing(tmp_path) == ["a.json"]


def test_read_json_errors(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"state file .*missing.json does not exist"):
        read_json(tmp_path / "missing.json", "state file")
    (tmp_path / "bad.json").write_text("{\n\n  'single': 1}")
    with pytest.raises(RunDirError, match=r"is not valid JSON \(.* at line 3\)"):
        read_json(tmp_path / "bad.json")
