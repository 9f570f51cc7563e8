"""Validation splits: stratified by class with a seed (the default) or the last 1/12 (``tail``), the skew
warning, what run.json records, and runs recorded before splits had a kind."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from secateurs.api import RunOptions, evaluate_run, load_splits, train_run
from secateurs.config import DataConfig, MeasureConfig, TrainConfig
from secateurs.data.splitting import class_quotas, skewed_classes, stratified_validation_indices
from secateurs.data.types import Dataset, TensorData, split_validation
from secateurs.errors import ConfigError, RunDirError, UsageError

pytestmark = pytest.mark.usefixtures("one_thread")


def sorted_by_class(per_class: int = 120, classes: int = 10) -> Dataset:
    """An MNIST-like training set stored sorted by class (like a folder read class by class)."""
    labels = torch.arange(classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(0)
    images = (labels.view(-1, 1, 1, 1) * 20 + torch.randint(0, 30, (len(labels), 1, 8, 8), generator=generator))
    train = TensorData(images.to(torch.uint8), labels)
    test = TensorData(train.x[:50].clone(), train.y[:50].clone())
    return Dataset("sorted", train, test, num_classes=classes, mean=(0.5,), std=(0.25,))


def test_tail_of_a_class_sorted_set_is_one_class_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    dataset = sorted_by_class()
    with caplog.at_level(logging.WARNING, logger="secateurs"):
        splits = split_validation(dataset, "tail")
    assert len(splits.val) == 1200 // 12 == 100
    assert splits.val.y.unique().tolist() == [9]
    assert splits.info is not None and splits.info.kind == "tail" and splits.info.seed is None
    assert splits.info.val_classes == [0] * 9 + [100]
    assert splits.info.train_classes == [120] * 9 + [20]
    message = caplog.records[-1].getMessage()
    assert caplog.records[-1].levelname == "WARNING"
    assert "the tail validation split of 100 examples is skewed by class" in message
    assert "class 0 has 0 (share 10.0)" in message and "class 9 has 100 (share 10.0)" in message
    assert "and 4 more" in message  # 10 skewed classes, 6 named
    assert splits.info.warning == message.removeprefix("sorted: ")


def test_stratified_split_gives_every_class_its_share(caplog: pytest.LogCaptureFixture) -> None:
    dataset = sorted_by_class()
    with caplog.at_level(logging.WARNING, logger="secateurs"):
        splits = split_validation(dataset)
    assert not caplog.records
    assert torch.bincount(splits.val.y).tolist() == [10] * 10
    assert torch.bincount(splits.train.y).tolist() == [110] * 10
    assert splits.info is not None and splits.info.kind == "stratified" and splits.info.seed == 0
    assert splits.info.sizes == {"train": 1100, "val": 100, "test": 50}
    assert splits.info.warning is None
    # train and validation partition the training set, each in dataset order
    chosen = stratified_validation_indices(dataset.train.y, 100, 0)
    rest = torch.tensor(sorted(set(range(1200)) - set(chosen.tolist())))
    assert torch.equal(splits.val.x, dataset.train.x[chosen]) and torch.equal(splits.train.x, dataset.train.x[rest])
    assert torch.equal(splits.val.y, dataset.train.y[chosen])


def test_the_stratified_split_depends_on_its_seed_only() -> None:
    dataset = sorted_by_class()
    first, again = split_validation(dataset, seed=3), split_validation(dataset, seed=3)
    other = split_validation(dataset, seed=4)
    assert torch.equal(first.val.x, again.val.x)
    assert not torch.equal(first.val.x, other.val.x)
    assert torch.bincount(other.val.y).tolist() == [10] * 10


def test_stratified_selection_by_hand() -> None:
    labels = torch.tensor([2, 0, 1, 0, 2, 0, 1, 0, 0])  # 5 of class 0, 2 of class 1, 2 of class 2
    chosen = stratified_validation_indices(labels, 4, seed=0)
    assert torch.bincount(labels[chosen], minlength=3).tolist() == class_quotas([5, 2, 2], 4) == [2, 1, 1]
    assert chosen.tolist() == sorted(chosen.tolist())
    # the seeded draw: one generator permutes each class's members (in dataset order) in turn
    generator = torch.Generator().manual_seed(0)
    expected = []
    for members in ([1, 3, 5, 7, 8], [2, 6], [0, 4]):
        quota = {5: 2, 2: 1}[len(members)]
        permutation = torch.randperm(len(members), generator=generator)
        expected += [members[i] for i in permutation[:quota].tolist()]
    assert chosen.tolist() == sorted(expected)


def test_largest_remainder_quotas() -> None:
    assert class_quotas([5, 3, 2], 4) == [2, 1, 1]  # shares 2, 1.2, 0.8: the remainder goes to class 2
    assert class_quotas([6000] * 10, 5000) == [500] * 10
    assert class_quotas([1, 1, 1], 2) == [1, 1, 0]  # equal remainders: lower class index first
    assert sum(class_quotas([7, 13, 29, 1], 17)) == 17


def test_skew_rules() -> None:
    assert skewed_classes([100, 100], [5, 5]) == []
    missing = skewed_classes([100, 100], [10, 0])
    assert [(s.label, s.count, s.share) for s in missing] == [(1, 0, 5.0)]  # 10 is not over twice 5
    assert skewed_classes([100, 100], [7, 3]) == []  # 3 of a share of 5: not under half
    assert [s.label for s in skewed_classes([100, 100], [8, 2])] == [1]  # 2 < 2.5; 8 is not over twice 5
    assert skewed_classes([1000, 10], [100, 0]) == []  # a share under 1 may well be missing
    assert [s.label for s in skewed_classes([10, 990], [3, 97])] == [0]  # 3 > 2 · 1 and ≥ 1 + 2: over


def test_unknown_split_kind() -> None:
    with pytest.raises(UsageError, match="unknown validation split 'random'; accepted: stratified, tail"):
        split_validation(sorted_by_class(), "random")


def test_data_config_split_fields() -> None:
    assert DataConfig().split == "stratified" and DataConfig().split_seed == 0
    from secateurs.config import validate

    with pytest.raises(ConfigError, match="data: split"):
        validate(DataConfig, {"split": "last"}, "data")


# ----------------------------------------------------------------------------------- recorded runs
def write_sorted_npz(path: Path) -> Path:
    dataset = sorted_by_class(per_class=60)
    np.savez(
        path,
        x_train=dataset.train.x.numpy(),
        y_train=dataset.train.y.numpy(),
        x_test=dataset.test.x.numpy(),
        y_test=dataset.test.y.numpy(),
    )
    return path


def test_run_json_records_the_split_and_old_runs_reload_with_tail(tmp_path: Path) -> None:
    data = DataConfig(name="npz", dir=str(write_sorted_npz(tmp_path / "sorted.npz")))
    budget = TrainConfig(steps=5, batch_size=32)
    options = RunOptions(out=tmp_path / "run", measure=MeasureConfig(latency=False))
    info = train_run("lenet300", data.model_copy(update={"split": "tail"}), budget, seed=0, options=options)
    split = info.split
    assert split is not None and split.kind == "tail" and split.sizes == {"train": 550, "val": 50, "test": 50}
    assert split.val_classes == [0] * 9 + [50] and split.warning is not None and "skewed by class" in split.warning
    assert info.config.data is not None and info.config.data.model_dump()["split"] == "tail"
    assert info.train_steps == 5

    # a run.json written before splits had a kind: its config.data has no 'split'
    run_file = tmp_path / "run" / "run.json"
    recorded = json.loads(run_file.read_text())
    recorded["config"]["data"] = {"name": "npz", "dir": data.dir}
    run_file.write_text(json.dumps(recorded))
    again = evaluate_run(tmp_path / "run")
    assert again.val_accuracy == info.metrics.val_accuracy  # measured on the same tail split
    assert DataConfig.from_record(recorded["config"]["data"], None, "run").split == "tail"
    stratified = load_splits(data)
    assert stratified.info is not None and stratified.info.val_classes == [5] * 10


def test_from_record_needs_a_dataset() -> None:
    with pytest.raises(RunDirError, match="does not record its dataset"):
        DataConfig.from_record(None, None, "runs/x")
    assert DataConfig.from_record({"name": "mnist", "dir": "/a"}, "/b", "x").dir == "/b"
    assert DataConfig.from_record({"name": "mnist", "split": "stratified", "split_seed": 4}, None, "x").split_seed == 4


def test_tensor_data_is_immutable_and_copies() -> None:
    import copy

    data = sorted_by_class().train
    with pytest.raises(AttributeError, match="immutable"):
        data.mapped = True
    clone = copy.deepcopy(data)
    assert torch.equal(clone.x, data.x) and torch.equal(clone.y, data.y)
    assert repr(clone) == "TensorData(1200×1×8×8 uint8)"
    mapped = TensorData(data.x, data.y, mapped=True).subset(torch.tensor([5, 1, 7]))  # keeps rows, copies nothing
    assert torch.equal(mapped.x, data.x[[5, 1, 7]]) and mapped.y.tolist() == data.y[[5, 1, 7]].tolist()
    images, labels = mapped.subset(torch.tensor([2, 0])).take(torch.tensor([1]))
    assert torch.equal(images, data.x[[5]]) and labels.tolist() == [int(data.y[5])]
    assert torch.equal(copy.deepcopy(mapped).x, mapped.x)
