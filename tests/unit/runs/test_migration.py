"""Schema versions: run directories and result rows written by older secateurs still load, reproduce and parse.

``tests/corpus/rundirs/`` holds run directories written by schema version 1 (see its README); the
committed ``results/*.jsonl`` are version-1 rows. Both are read through `secateurs.runs.migrate`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from secateurs.api import evaluate_run
from secateurs.bench.results import ResultRow, ResultsFile, parse_row, read_results
from secateurs.errors import RunDirError
from secateurs.io.files import dumps_json, load_tensors
from secateurs.runs.directory import load_run, read_run
from secateurs.runs.migrate import SCHEMA_VERSION, record_1_to_2, upgrade_record
from secateurs.runs.record import Metrics, RunRecord, parse_record
from secateurs.runs.update import record_latency
from secateurs.structure.plan import RemoveStep, parse_plan

ROOT = Path(__file__).resolve().parents[3]
RUNDIRS = ROOT / "tests" / "corpus" / "rundirs"
PRUNED = RUNDIRS / "v1-prune-lenet5"
SAVED = RUNDIRS / "v1-save-custom"
RESULTS = sorted((ROOT / "results").glob("*.jsonl"))


def custom() -> nn.Module:
    """The model `v1-save-custom` was saved from (``sec.save`` with no registry name)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def raw(path: Path) -> dict[str, Any]:
    value = json.loads(path.read_text())
    assert isinstance(value, dict)
    return value


# ------------------------------------------------------------------------------ run directories
def test_a_version_1_pruned_run_loads_and_reproduces_its_outputs() -> None:
    assert "schema_version" not in raw(PRUNED / "run.json")  # written before the field existed
    run = load_run(PRUNED)
    recorded = load_tensors(RUNDIRS / "v1-prune-lenet5.outputs.safetensors")
    with torch.no_grad():
        logits = run.model(recorded["inputs"])
    assert torch.allclose(logits, recorded["logits"], atol=1e-5, rtol=0)
    assert run.plan is not None and [type(step) for step in run.plan.steps] == [RemoveStep] * 4
    assert [(s.root, s.channels, len(s.removed)) for s in run.plan.removals()] == [
        ("hidden.2", 84, 26),
        ("hidden.0", 120, 37),
        ("features.3", 16, 5),
        ("features.0", 6, 1),
    ]
    assert run.plan.removals()[3].kept() == [1, 2, 3, 4, 5]
    assert sum(p.numel() for p in run.model.parameters()) == run.record.metrics.params == 29_886


def test_a_version_1_pruned_run_measures_what_it_recorded() -> None:
    record = read_run(PRUNED)
    measured = evaluate_run(PRUNED)  # synthetic data: regenerated from its seed, bit for bit
    assert measured.val_accuracy == record.metrics.val_accuracy == 0.79
    assert measured.test_accuracy == record.metrics.test_accuracy == 0.775
    assert measured.test_loss == pytest.approx(record.metrics.test_loss, abs=1e-5)
    assert (measured.params, measured.macs, measured.sparsity_params) == (
        record.metrics.params,
        record.metrics.macs,
        record.metrics.sparsity_params,
    )


def test_a_version_1_pruned_record_parses_into_the_current_schema() -> None:
    record = read_run(PRUNED)
    assert record.schema_version == SCHEMA_VERSION == 2
    assert record.kind == "prune" and record.parent == "runs/lenet5" and record.seed == 0
    assert record.model.name == "lenet5" and record.model.input_shape == [1, 28, 28]
    assert record.config.data is not None and record.config.data.name == "synthetic"
    assert record.config.method is not None and record.config.method["method"] == "l2-filter"
    assert record.dense == Metrics(val_accuracy=0.7, test_accuracy=0.695, params=61_706, macs=416_520)
    assert record.metrics_before_finetune is not None and record.metrics_before_finetune.test_accuracy == 0.48
    assert record.metrics.sparsity_prunable == pytest.approx(0.5165283878314625)
    latency = record.metrics.latency_ms
    assert latency is not None and latency.threads == 1 and set(latency.batches()) == {1, 256}
    assert record.history.method == [] and record.history.finetune is not None and len(record.history.finetune) == 1
    assert record.method_info is not None and record.method_info["groups"]["features.0"]["removed"] == 1
    assert record.timings.finetune_s is not None and record.versions is not None
    assert record.versions.torch_pruning == "1.6.0"


def test_the_version_1_plan_reads_and_writes_back_byte_for_byte() -> None:
    text = (PRUNED / "plan.json").read_text()
    plan = parse_plan(json.loads(text))
    assert dumps_json(plan.to_json()) == text


def test_a_version_1_saved_run_loads_with_its_factory() -> None:
    run = load_run(SAVED, custom)
    recorded = load_tensors(RUNDIRS / "v1-save-custom.outputs.safetensors")
    with torch.no_grad():
        assert torch.equal(run.model(recorded["inputs"]), recorded["logits"])
    assert run.masks is not None and sorted(run.masks.names()) == ["0.weight", "3.weight"]
    record = run.record
    assert record.seed is None and record.model.name == "custom"
    assert record.config.method is not None and record.config.method["sparsity"] == 0.5  # was config.prune
    assert record.history.method == [] and record.history.train is None  # was a bare list
    assert record.method_info == {"layers": {"0.weight": [18, 36], "3.weight": [216, 432]}}
    assert record.preprocessing.mean is None and record.preprocessing.input_shape == [1, 8, 8]


def test_version_1_records_of_a_training_run_and_of_a_kept_bench_cell_parse() -> None:
    train = parse_record(raw(RUNDIRS / "v1-records" / "train-lenet5.json"))
    assert train.kind == "train" and train.parent is None and train.stop_reason == "budget"
    assert train.history.train is not None and [e["epoch"] for e in train.history.train] == list(range(1, 9))
    assert train.config.train is not None and train.config.train["epochs"] == 8.0
    cell = parse_record(raw(RUNDIRS / "v1-records" / "bench-cell-lenet5.json"))
    assert cell.bench is not None and (cell.bench.key, cell.bench.suite) == ("lenet5|magnitude|0.5|0", "mini")
    assert cell.config.method is not None and cell.config.method["method"] == "magnitude"
    assert cell.metrics_before_finetune is not None and cell.metrics_before_finetune.test_accuracy == 0.1
    assert cell.model.name == "lenet5" and cell.extra is None


def test_rewriting_a_version_1_run_upgrades_its_run_json(tmp_path: Path) -> None:
    run = shutil.copytree(PRUNED, tmp_path / "run")
    before = read_run(run)
    after = record_latency(run, "torch", {"runtime": "torch", "batch_1": {"median_ms": 0.1}})
    stored = raw(run / "run.json")
    assert stored["schema_version"] == 2 and "metrics_before_finetune" in stored
    assert after.latency == {"torch": {"runtime": "torch", "batch_1": {"median_ms": 0.1}}}
    assert read_run(run).model_copy(update={"latency": None}) == before
    assert (run / "plan.json").read_bytes() == (PRUNED / "plan.json").read_bytes()  # only run.json changed


# ------------------------------------------------------------------------------------ migrations
def test_the_migration_is_pure_and_moves_what_it_does_not_know_under_extra() -> None:
    old = {"kind": "prune", "history": [{"round": 1}], "config": {"prune": {"method": "lamp"}}, "note": "mine"}
    copy = json.loads(json.dumps(old))
    new = record_1_to_2(old)
    assert old == copy  # the input is not mutated
    assert new["schema_version"] == 2 and new["extra"] == {"note": "mine"} and "note" not in new
    assert new["history"] == {"method": [{"round": 1}]} and new["config"] == {"method": {"method": "lamp"}}
    assert record_1_to_2({"kind": "train", "history": [{"epoch": 1}]})["history"] == {"train": [{"epoch": 1}]}
    assert upgrade_record({"schema_version": 2, "kind": "train"}) == {"schema_version": 2, "kind": "train"}


def test_a_current_record_round_trips_through_its_json() -> None:
    record = read_run(PRUNED)
    assert parse_record(json.loads(dumps_json(record.to_json()))) == record
    assert isinstance(record, RunRecord) and "before_finetune" not in record.to_json()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"schema_version": 3}, "schema version 3, newer than this secateurs reads (up to 2)"),
        ({"schema_version": "2"}, "schema_version must be an integer ≥ 1, found '2'"),
        ({"kind": "finetune"}, "kind: Input should be 'train' or 'prune'"),
        ({"seed": "0"}, "seed: Input should be a valid integer"),
        ({"metrics": {"val_accuracy": "high"}}, "metrics.val_accuracy: Input should be a valid number"),
        ({"metrics": {"accuracy": 0.5}}, "unknown key 'metrics.accuracy'"),
        ({"schema_version": 2, "surprise": 1}, "unknown key 'surprise'"),
        ({"metrics": {"latency_ms": {"batch_x": 1.0}}}, "unknown latency key 'batch_x'"),
    ],
)
def test_a_record_that_does_not_validate_is_one_line(changes: dict[str, Any], fragment: str) -> None:
    broken = {**raw(PRUNED / "run.json"), **changes}
    with pytest.raises(RunDirError) as error:
        parse_record(broken, "run.json")
    message = str(error.value)
    assert fragment in message and "\n" not in message and message.startswith("run.json")


# --------------------------------------------------------------------------------------- rows
@pytest.mark.parametrize("path", RESULTS, ids=lambda path: path.name)
def test_every_committed_results_file_parses_through_the_migration(path: Path) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = read_results(path)
    assert len(rows) == len(lines) > 0
    for line, row in zip(lines, rows, strict=True):
        assert "schema_version" not in line and row.schema_version == 2  # version-1 rows, migrated
        assert row.key == line["key"] and row.sparsity == line["sparsity"]
        assert row.metrics.test_accuracy == line["metrics"]["test_accuracy"]
        assert row.metrics_before_finetune.test_accuracy == line["before_finetune"]["test_accuracy"]


def test_rows_are_written_in_the_current_schema_and_read_back_equal(tmp_path: Path) -> None:
    (first,) = [row for row in read_results(ROOT / "results" / "demo.jsonl") if row.label == "hap"]
    results = ResultsFile(tmp_path / "results.jsonl")
    results.append(first)
    stored = json.loads((tmp_path / "results.jsonl").read_text())
    assert stored["schema_version"] == 2 and "before_finetune" not in stored
    assert list(stored)[:8] == ["schema_version", "key", "suite", "model", "method", "label", "sparsity", "seed"]
    assert results.read() == [first]
    assert isinstance(first, ResultRow) and first.info("realised.params_removed") == pytest.approx(0.5005, abs=1e-4)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"key": "a", "model": "m", "sparsity": 0.5}, "lacks label, suite, method, seed"),
        ({"key": "a", "suite": "s", "model": "m", "method": "x", "label": "x", "sparsity": True, "seed": 0},
         "sparsity: Input should be a valid number"),
        ({"key": "a", "suite": "s", "model": "m", "method": "x", "label": "x", "sparsity": 0.5, "seed": 0,
          "metrics": {"params": 1.5}}, "metrics.params: Input should be a valid integer"),
    ],
)  # fmt: skip
def test_a_row_that_does_not_validate_is_one_line(row: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RunDirError, match=fragment):
        parse_row(row, "results.jsonl: row 1 ('a')")
