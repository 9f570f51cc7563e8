"""`secateurs.runtime.distributed`: torchrun's environment, work splitting, digests, and a real two-process
gloo job (env-var rendezvous, as torchrun does it) checking collectives, mask synchronisation, rank-0
run directories and bit-exact data-parallel resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from secateurs.errors import UsageError
from secateurs.runtime import distributed
from secateurs.runtime.distributed import World
from secateurs.training import consistency

WORKER = Path(__file__).with_name("distributed_worker.py")
SOURCE = Path(__file__).resolve().parents[3] / "src"


# ------------------------------------------------------------------------------------------ pure
@given(count=st.integers(0, 200), size=st.integers(1, 9))
def test_split_items_partitions_the_items_evenly(count: int, size: int) -> None:
    shares = [distributed.split_items(count, rank, size) for rank in range(size)]
    assert [item for share in shares for item in share] == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_split_items_of_five_over_two() -> None:
    assert [list(distributed.split_items(5, rank, 2)) for rank in range(2)] == [[0, 1, 2], [3, 4]]
    assert [list(distributed.split_items(1, rank, 3)) for rank in range(3)] == [[0], [], []]
    with pytest.raises(UsageError, match="rank 2 of 2"):
        distributed.split_items(5, 2, 2)


def test_environment_world() -> None:
    assert distributed.environment_world({}) is None
    assert distributed.environment_world({"WORLD_SIZE": "1", "RANK": "0"}) is None
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert distributed.environment_world(env) == World(rank=3, size=4, local_rank=1)
    with pytest.raises(UsageError, match="WORLD_SIZE must be an integer, got 'two'"):
        distributed.environment_world({"WORLD_SIZE": "two"})
    with pytest.raises(UsageError, match="inconsistent: RANK=4, WORLD_SIZE=4"):
        distributed.environment_world({**env, "RANK": "4"})
    with pytest.raises(UsageError, match="MASTER_PORT is not set; start distributed runs with torchrun"):
        distributed.environment_world({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h"})


def test_a_single_process_world_needs_no_process_group() -> None:
    assert distributed.init_from_environment({}) == World()
    assert distributed.current_world() == World() and World().is_main and not World().distributed
    tensor = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(distributed.all_reduce_sum(tensor)) is tensor
    assert tensor.tolist() == [1.0, 2.0]
    assert distributed.broadcast_json({"a": 1}) == {"a": 1}
    assert distributed.trainer_options() == {}
    assert distributed.sum_over_items(4, lambda items: {"n": torch.tensor([float(sum(items))])})["n"].item() == 6.0
    rounds = distributed.sum_over_items(3, lambda items: {"n": torch.tensor([float(sum(items))])}, first=4)
    assert rounds["n"].item() == 4 + 5 + 6
    assert consistency.synchronize_masks_(None) is False


def test_per_rank_batch_size() -> None:
    assert distributed.per_rank_batch_size(128, World(0, 4)) == 32
    with pytest.raises(UsageError, match=r"batch size 100 is the global batch .* a multiple of 3"):
        distributed.per_rank_batch_size(100, World(0, 3))


def test_tensor_digest_sees_every_bit_and_ignores_insertion_order() -> None:
    a = {"x": torch.zeros(4), "m": torch.tensor([True, False])}
    assert consistency.tensor_digest(a) == consistency.tensor_digest(dict(reversed(a.items())))
    flipped = {"x": torch.zeros(4), "m": torch.tensor([True, True])}
    assert consistency.tensor_digest(a) != consistency.tensor_digest(flipped)
    negative_zero = {"x": torch.tensor([-0.0, 0.0, 0.0, 0.0]), "m": a["m"]}
    assert consistency.tensor_digest(a) != consistency.tensor_digest(negative_zero)
    assert consistency.tensor_digest({"x": torch.zeros(2, 2)}) != consistency.tensor_digest({"x": torch.zeros(4)})


# ------------------------------------------------------------------------------- two processes
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("distributed")
    port = free_port()
    processes = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    try:
        outputs = [process.communicate(timeout=300)[0].decode() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    return [json.loads((root / f"rank{rank}.json").read_text()) for rank in range(2)]


def test_both_ranks_joined_with_gloo(two_ranks: list[dict[str, Any]]) -> None:
    assert [result["world"] for result in two_ranks] == [[0, 2, "gloo"], [1, 2, "gloo"]]


def test_collectives(two_ranks: list[dict[str, Any]]) -> None:
    for result in two_ranks:
        collectives = result["collectives"]
        assert collectives["sum"] == [2.0, 1.0]
        assert collectives["mean"] == [1.0]
        assert collectives["json"] == {"from": 0, "list": [1, 2]}
        assert collectives["tensors"] == {
            "b": ["torch.bool", [True, False, True]],
            "f": ["torch.float32", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]],
        }
        assert collectives["sum_over_items"] == [0 + 1 + 2 + 3 + 4, 0 + 1 + 4 + 9 + 16]
        assert collectives["second_round"] == [5 + 6 + 7 + 8 + 9, 25 + 36 + 49 + 64 + 81]
        assert "rank(s) 1 computed results named or shaped differently from rank 0" in collectives["layout_mismatch"]
    assert [result["collectives"]["items"] for result in two_ranks] == [[0, 1, 2], [3, 4]]


def test_hutchinson_probes_split_over_ranks_give_the_single_process_traces(two_ranks: list[dict[str, Any]]) -> None:
    from distributed_worker import hutchinson_problem

    from secateurs.scoring.hessian import HutchinsonConfig, hutchinson_channel_traces

    model, data = hutchinson_problem()
    config = HutchinsonConfig(probes=7, min_probes=7, tolerance=0.0)
    single = hutchinson_channel_traces(
        model, data, torch.nn.functional.cross_entropy, torch.Generator().manual_seed(3), config
    )
    leader, follower = (result["hutchinson"] for result in two_ranks)
    assert leader == follower  # all-reduced: bit-identical on every rank
    assert leader["probes"] == single.probes == 7  # rounds of 2 probes, the last one of 1
    for name, values in leader["traces"].items():
        assert torch.allclose(torch.tensor(values, dtype=torch.float64), single.traces[name], rtol=1e-5, atol=1e-8)


def test_masks_are_broadcast_from_rank_0_and_checked(two_ranks: list[dict[str, Any]]) -> None:
    for result in two_ranks:
        identical = result["identical"]
        assert identical["mismatch"] == (
            "the weights differ between ranks: rank(s) 1 do not match rank 0 "
            "(every rank must hold identical state; is the method deterministic?)"
        )
        assert identical["masks_differed"] is True
        assert identical["masked_weights_zero"] is True  # rank 1 zeroed what rank 0's mask removes
    assert two_ranks[0]["identical"]["mask_digest"] == two_ranks[1]["identical"]["mask_digest"]


def test_only_rank_0_writes_and_the_others_wait(two_ranks: list[dict[str, Any]]) -> None:
    leader, follower = (result["run_directories"] for result in two_ranks)
    assert leader["checkpoint_dir"] is not None and leader["checkpoint_dir"].endswith(".run.partial/checkpoint")
    assert follower["checkpoint_dir"] is None
    for result in (leader, follower):
        assert result["record_name"] == "run" and result["record_accuracy"] == 0.5  # rank 0's record on every rank
        assert result["listing_after"] == ["run"]  # no partial dir or lock file of any rank left, nothing else
        assert result["run_complete"] is True
        assert "already holds a finished run; pass --overwrite" in result["refusal"]  # raised on every rank


def test_data_parallel_training_and_resume(two_ranks: list[dict[str, Any]]) -> None:
    leader, follower = (result["training"] for result in two_ranks)
    for result in (leader, follower):
        assert result["resume_exact"] is True  # stopped after epoch 2, resumed: the same bits as uninterrupted
        assert result["resumed_steps"] == 3 * 17  # 550 training examples, global batch 32
        assert result["resumed_history"] == result["history"]
        assert "batch size 33 is the global batch of all 2 processes" in result["batch_error"]
    assert leader["history"] == follower["history"]  # reduced metrics: every rank logs the same record
    assert leader["weights_digest"] == follower["weights_digest"]
    assert leader["history"][-1]["val_accuracy"] > 0.8
