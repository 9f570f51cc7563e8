"""``secateurs sensitivity`` on a run trained on the synthetic dataset: files, numbers, targets, bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from conftest import run_cli as shared_run_cli
from secateurs.analysis.layer_targets import weighted_sparsity
from secateurs.cli import main

LAYERS = {"features.0.weight": 784 * 300, "features.2.weight": 300 * 100, "classifier.weight": 100 * 10}


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("sensitivity") / "dense"
    argv = ["--quiet", "--threads", "1", "train", "--model", "lenet300", "--data", "synthetic", "--epochs", "2"]
    argv += ["--batch-size", "32", "--lr", "0.05", "--out", str(out), "--no-latency"]
    try:
        assert main(argv) == 0
        yield out
    finally:
        torch.set_num_threads(threads)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return shared_run_cli(capsys, *argv, threads=1)


def test_sensitivity_writes_table_plot_and_targets(
    dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sensitivity"
    code, stdout, err = run_cli(
        capsys,
        "sensitivity",
        str(dense_run),
        "--out",
        str(out),
        "--sparsities",
        "0.9,0.5",
        "--tolerance",
        "0.05",
        "--emit-targets",
        "--target-sparsity",
        "0.3",
    )
    assert code == 0, err
    assert "| features.0.weight | 235,200 |" in stdout
    report = json.loads((out / "sensitivity.json").read_text())
    recorded = json.loads((dense_run / "run.json").read_text())["metrics"]
    assert report["baseline"]["val_accuracy"] == recorded["val_accuracy"]  # same split, same preprocessing
    assert report["sparsities"] == [0.5, 0.9]
    rows = list(csv.DictReader((out / "sensitivity.csv").open()))
    assert [(r["layer"], r["sparsity"]) for r in rows] == [(name, s) for name in LAYERS for s in ("0.5", "0.9")]
    for row in rows:
        total = LAYERS[row["layer"]]
        assert int(row["total"]) == total
        assert int(row["kept"]) == round((1 - float(row["sparsity"])) * total)
        assert float(row["accuracy_drop"]) == pytest.approx(recorded["val_accuracy"] - float(row["val_accuracy"]))
    targets = yaml.safe_load((out / "layer_sparsity.yaml").read_text())
    assert list(targets) == list(LAYERS)
    assert weighted_sparsity(targets, LAYERS) == pytest.approx(0.3, abs=1e-5)
    assert (out / "sensitivity.png").read_bytes().startswith(b"\x89PNG")

    # the emitted file is a prune target: every layer lands on its own sparsity
    pruned = tmp_path / "pruned"
    code, _, err = run_cli(
        capsys, "prune", "--from", str(dense_run), "--method", "magnitude", "--layer-sparsity",
        str(out / "layer_sparsity.yaml"), "--out", str(pruned), "--no-latency",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads((pruned / "run.json").read_text())
    assert info["config"]["method"]["layer_sparsity"] == targets
    for name, total in LAYERS.items():
        kept, listed_total = info["method_info"]["layers"][name]
        assert listed_total == total and kept == max(1, round((1 - targets[name]) * total))


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--sparsities", "0.5,abc"], "comma-separated fractions"),
        (["--sparsities", "0.5,1.5"], "[0, 1)"),
        (["--granularity", "diagonal"], "granularity"),
        (["--target-sparsity", "0.5"], "add --emit-targets"),
        (["--tolerance", "2"], "--tolerance"),
    ],
)
def test_bad_options_are_one_line_errors(
    dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], fragment: str
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sensitivity", str(dense_run), "--out", str(out), *arguments)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], err
    assert not out.exists()


def test_a_missing_run_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "sensitivity", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert code == 2 and "is not a run directory" in err and len(err.strip().splitlines()) == 1
