"""HAP end to end on a run directory: train, prune with implants, fine-tune, reload from plan.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secateurs.api import RunOptions, evaluate_run, prune_run, train_run
from secateurs.config import CalibrationConfig, DataConfig, MeasureConfig, PruneConfig, TrainConfig
from secateurs.errors import StructureError
from secateurs.runs.directory import load_run
from secateurs.structure.implant import ImplantedConv2d

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hap_run_with_implants_reloads_and_remeasures_identically(tmp_path: Path) -> None:
    data = DataConfig(name="synthetic")
    measure = MeasureConfig(latency=False)
    train = TrainConfig(epochs=1, lr=0.05, batch_size=64)
    train_run("resnet8", data, train, seed=0, options=RunOptions(out=tmp_path / "dense", measure=measure))
    prune = PruneConfig(method="hap", sparsity=0.5, options={"probes": 4, "implant_ratio": 0.2})
    finetune = TrainConfig(epochs=0.5, lr=0.01, batch_size=64)
    info = prune_run(
        tmp_path / "dense",
        prune,
        finetune,
        seed=0,
        options=RunOptions(out=tmp_path / "hap", measure=measure.model_copy(update={"bn_recalibrate": True})),
        calibration=CalibrationConfig(size=128, batch_size=64),
    )
    assert (tmp_path / "hap" / "plan.json").is_file()
    plan = json.loads((tmp_path / "hap" / "plan.json").read_text())
    assert any(step.get("kind") == "implant" for step in plan["steps"])
    method_info = info.method_info
    assert method_info is not None
    assert method_info["probes"] == 4 and method_info["calibration_images"] == 128
    assert info.timings.score_s is not None and info.timings.score_s > 0
    assert method_info["realised"]["params_removed"] == pytest.approx(0.5, abs=0.03)
    assert info.metrics.params == method_info["params"]
    log = (tmp_path / "hap" / "log.txt").read_text()
    assert f"implanted_channels={method_info['implanted_channels']}" in log and "implanted (plan.json)" in log
    run = load_run(tmp_path / "hap")
    assert any(isinstance(m, ImplantedConv2d) for m in run.model.modules())
    implants = [m.implant.weight.detach() for m in run.model.modules() if isinstance(m, ImplantedConv2d)]
    assert any(float(w.abs().sum()) > 0 for w in implants)  # fine-tuning trained zero-initialised implants
    with pytest.raises(StructureError, match=r"cannot remove 0\.9950 of the params"):
        prune_run(
            tmp_path / "dense",
            PruneConfig(method="l2-filter", sparsity=0.995, scope="global"),
            None,
            seed=0,
            options=RunOptions(out=tmp_path / "too-much", measure=measure),
        )
    assert not (tmp_path / "too-much").exists() and not list(tmp_path.glob(".too-much*"))
    again = evaluate_run(tmp_path / "hap")
    assert again.val_accuracy == info.metrics.val_accuracy
    assert again.params == info.metrics.params and again.macs == info.metrics.macs
