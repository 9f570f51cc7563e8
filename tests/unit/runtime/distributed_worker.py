"""One rank of the two-process gloo job that `test_distributed.py` starts (torchrun's env-var rendezvous).

Usage: ``python distributed_worker.py OUT_DIR`` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
Runs every scenario and writes ``OUT_DIR/rank{RANK}.json``; the test asserts on both files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.config import TrainConfig
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import split_validation
from secateurs.errors import RunDirError, UsageError
from secateurs.runs.directory import is_run_dir
from secateurs.runs.distributed import writing_run_on
from secateurs.runs.record import Metrics, ModelSpec, Preprocessing, RunRecord
from secateurs.runtime import distributed
from secateurs.sparsity.masks import MaskStore
from secateurs.training import consistency
from secateurs.training.loop import Callback, Trainer


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["epoch"] == self.epoch:
            trainer.stop("test")


def train(world: distributed.World, config: TrainConfig, seed: int, checkpoint: Path | None, **kwargs: Any) -> Trainer:
    splits = split_validation(make_synthetic(num_train=600, num_test=100, seed=0))
    trainer = Trainer(
        kwargs.pop("model", mlp(0)),
        splits,
        config,
        seed=seed,
        checkpoint_dir=checkpoint if world.is_main else None,
        **distributed.trainer_options(world),
        **kwargs,
    )
    return trainer


def collectives(world: distributed.World) -> dict[str, Any]:
    rank = world.rank
    result: dict[str, Any] = {}
    result["sum"] = distributed.all_reduce_sum(torch.tensor([1.0, rank])).tolist()
    result["mean"] = distributed.all_reduce_mean(torch.tensor([2.0 * rank])).tolist()
    result["json"] = distributed.broadcast_json({"from": rank, "list": [1, 2]} if rank == 0 else None)
    sent = {"b": torch.tensor([True, False, True]), "f": torch.arange(6.0).view(2, 3) + rank}
    received = distributed.broadcast_tensors(sent if rank == 0 else None)
    result["tensors"] = {name: [str(value.dtype), value.tolist()] for name, value in received.items()}

    def squares(items: range) -> dict[str, torch.Tensor]:
        total = torch.zeros(2, dtype=torch.float64)
        for item in items:
            total += torch.tensor([item, item**2], dtype=torch.float64)
        return {"moments": total}

    result["items"] = list(distributed.split_items(5, *world.shard))
    result["sum_over_items"] = distributed.sum_over_items(5, squares, world)["moments"].tolist()
    result["second_round"] = distributed.sum_over_items(5, squares, world, first=5)["moments"].tolist()
    try:
        distributed.sum_over_items(4, lambda items: {"x": torch.zeros(2 + world.rank)}, world)
        result["layout_mismatch"] = None
    except distributed.DistributedMismatch as error:
        result["layout_mismatch"] = str(error)
    return result


def identical_state(world: distributed.World) -> dict[str, Any]:
    result: dict[str, Any] = {}
    same = {"w": torch.ones(3)}
    consistency.check_identical(same, "weights", world)
    try:
        consistency.check_identical({"w": torch.ones(3) * (1 + world.rank)}, "weights", world)
        result["mismatch"] = None
    except distributed.DistributedMismatch as error:
        result["mismatch"] = str(error)
    model = mlp(0)
    store = MaskStore(model)
    generator = torch.Generator().manual_seed(world.rank)  # rank 1 prunes differently
    store.set_("1.weight", torch.rand(32, 784, generator=generator) < 0.5)
    result["masks_differed"] = consistency.synchronize_masks_(store, world)
    mask = store.get("1.weight")
    result["mask_digest"] = consistency.tensor_digest({"m": mask})
    result["masked_weights_zero"] = bool((store.original("1.weight")[~mask] == 0).all())
    return result


def run_directories(world: distributed.World, root: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    out = root / "run" if world.is_main else root / f"never-{world.rank}"
    model = mlp(0)
    with writing_run_on(world, out) as stage:
        result["checkpoint_dir"] = str(stage.checkpoint_dir) if stage.checkpoint_dir else None
        stage.save_model(model)
        record = stage.commit(
            RunRecord(
                kind="train",
                seed=0,
                model=ModelSpec(name="mlp", input_shape=[4], num_classes=3),
                preprocessing=Preprocessing(),
                metrics=Metrics(val_accuracy=0.5),
            )
        )
    result["record_name"] = record.name
    result["record_accuracy"] = record.metrics.val_accuracy
    result["listing_after"] = sorted(path.name for path in root.iterdir())
    result["run_complete"] = is_run_dir(root / "run")
    try:
        with writing_run_on(world, root / "run") as stage:
            pass
        result["refusal"] = None
    except RunDirError as error:
        result["refusal"] = str(error)
    return result


def training(world: distributed.World, root: Path) -> dict[str, Any]:
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, eval_subset=40)
    whole = train(world, config, 5, root / "whole")
    whole_history = whole.fit().history
    first = train(world, config, 5, root / "resumed", callbacks=[StopAfterEpoch(2)])
    first.fit()
    resumed = train(world, config, 5, root / "resumed", model=mlp(100 + world.rank))
    summary = resumed.fit(resume=True)
    expected = dict(whole.model.state_dict())
    got = dict(resumed.model.state_dict())
    consistency.check_identical(got, "resumed weights", world)
    try:
        train(world, config.with_(batch_size=33), 5, None)
        batch_error = None
    except UsageError as error:
        batch_error = str(error)
    return {
        "resume_exact": all(torch.equal(expected[key], got[key]) for key in expected),
        "resumed_steps": summary.steps,
        "history": [{k: v for k, v in record.items() if k != "seconds"} for record in whole_history],
        "resumed_history": [{k: v for k, v in record.items() if k != "seconds"} for record in summary.history],
        "weights_digest": consistency.tensor_digest(expected),
        "batch_error": batch_error,
    }


def hutchinson_problem() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A small conv net and calibration data, the same in every process (the test recomputes it)."""
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 3))
    generator = torch.Generator().manual_seed(12)
    data = [(torch.randn(8, 1, 5, 5, generator=generator), torch.randint(0, 3, (8,), generator=generator))]
    return model, data


def hutchinson(world: distributed.World) -> dict[str, Any]:
    """HAP's channel traces with the probes split over the ranks (never stopping early)."""
    from secateurs.scoring.hessian import HutchinsonConfig, hutchinson_channel_traces

    model, data = hutchinson_problem()
    config = HutchinsonConfig(probes=7, min_probes=7, tolerance=0.0)
    traces = hutchinson_channel_traces(
        model, data, nn.functional.cross_entropy, torch.Generator().manual_seed(3), config
    )
    return {"probes": traces.probes, "traces": {name: value.tolist() for name, value in traces.traces.items()}}


def main() -> None:
    root = Path(sys.argv[1])
    torch.set_num_threads(1)
    world = distributed.init_from_environment(os.environ, backend="gloo")
    result = {"world": [world.rank, world.size, world.backend]}
    result["collectives"] = collectives(world)
    result["identical"] = identical_state(world)
    result["hutchinson"] = hutchinson(world)
    result["run_directories"] = run_directories(world, root / "runs")
    result["training"] = training(world, root / "training")
    distributed.shutdown()
    (root / f"rank{world.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
