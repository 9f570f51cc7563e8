"""Names and paths taken from recipes and suites cannot make the CLI write outside its output root.

Run names with separators, ``..``, absolute paths, hidden names, line breaks or excessive length are
refused before anything is written; a symbolic link at a run's path (planted to redirect a write) is
refused, and the directory it points to is left untouched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from secateurs.cli import main
from secateurs.errors import RunDirError
from secateurs.runs.directory import partial_dir, writing_run

RECIPE = {"data": {"name": "synthetic"}, "model": "lenet300", "train": {"epochs": 0.1}, "measure": {"latency": False}}
SUITE = {
    "name": "escape",
    "data": {"name": "synthetic"},
    "models": [{"name": "lenet300", "train": {"epochs": 0.1}}],
    "methods": [{"name": "magnitude"}],
    "sparsities": [0.5],
    "finetune": {"epochs": 0.1},
    "measure": {"latency": False},
    "keep_runs": True,
}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    threads = torch.get_num_threads()
    try:
        code = main(["--quiet", "--threads", "1", *argv])
    finally:
        torch.set_num_threads(threads)
    return code, capsys.readouterr().err.strip()


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize(
    "name",
    ["../escaped", "../../escaped", "/tmp/escaped", "a/b", "..", ".hidden", "x\n", "x\x00y", "c:\\x", "n" * 129],
)
def test_recipe_names_cannot_leave_the_output_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"name": name, **RECIPE}))
    root = tmp_path / "inside" / "runs"
    code, err = cli(capsys, "run", str(recipe), "--out-root", str(root))
    assert code == 2 and err.startswith("secateurs: error: run name ") and "must be a plain name" in err
    assert tree(tmp_path) == ["recipe.yaml"]  # nothing written anywhere, not even the root


def test_a_symlink_planted_at_the_run_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    root = tmp_path / "runs"
    root.mkdir()
    (root / "tiny").symlink_to(outside, target_is_directory=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "tiny", **RECIPE}))
    code, err = cli(capsys, "run", str(recipe), "--out-root", str(root))
    assert code == 2 and "is a symbolic link; refusing to write through it" in err
    assert tree(outside) == ["precious.txt"] and (outside / "precious.txt").read_text() == "keep"


def test_suite_names_cannot_leave_the_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for field, value, message in (
        ("models", [{"name": "../../escaped"}], "unknown model '../../escaped'"),
        ("methods", [{"name": "magnitude", "label": "../../escaped"}], "cell name 'lenet300_../../escaped_0.5_0'"),
    ):
        suite = tmp_path / "suite.yaml"
        suite.write_text(json.dumps({**SUITE, field: value}))
        code, err = cli(capsys, "bench", str(suite), "--out", str(tmp_path / "bench"))
        assert code == 2 and message in err
        assert tree(tmp_path) == ["suite.yaml"]


def test_a_symlink_planted_in_a_bench_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps(SUITE))
    (tmp_path / "bench" / "dense").mkdir(parents=True)
    (tmp_path / "bench" / "dense" / "lenet300-seed0").symlink_to(outside, target_is_directory=True)
    code, err = cli(capsys, "bench", str(suite), "--out", str(tmp_path / "bench"))
    assert code == 2 and "lenet300-seed0 is a symbolic link; refusing to write through it" in err
    assert tree(outside) == []


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)


@pytest.mark.parametrize("planted", ["out", "partial"])
def test_writing_run_never_follows_a_symlink(tmp_path: Path, planted: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "run"
    (out if planted == "out" else partial_dir(out)).symlink_to(outside, target_is_directory=True)
    for resume in (False, True):
        refusal = pytest.raises(RunDirError, match="is a symbolic link; refusing to write a run through it")
        with refusal, writing_run(out, resume=resume) as stage:
            stage.save_model(Net())
    assert os.listdir(outside) == []
