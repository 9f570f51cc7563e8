"""Write the malformed-input corpus that `tests/integration/test_corpus.py` replays through the CLI.

Run ``python tests/corpus/generate.py`` to regenerate every file (deterministic). Each sub-folder is
one kind of input; the replay test puts the file where the CLI reads that kind (see its docstring).
Many files are the smallest reproductions of bugs the fuzzers found (named in docs/reliability.md).
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent

RUN_INFO: dict[str, Any] = {
    "kind": "train",
    "seed": 0,
    "config": {"data": {"name": "synthetic", "dir": None}},
    "model": {"name": "lenet300", "input_shape": [1, 28, 28], "num_classes": 10},
    "preprocessing": {"mean": [0.5], "std": [0.25], "input_shape": [1, 28, 28]},
    "metrics": {"val_accuracy": 0.5, "test_accuracy": 0.5},
}
PLAN_FORMAT = "secateurs-plan/1"


def recipe(**changes: Any) -> str:
    tree = {"name": "corpus", "data": {"name": "synthetic"}, "model": "lenet300", "train": {"epochs": 1}}
    tree.update(changes)
    return json.dumps(tree)  # JSON is YAML


def suite(**changes: Any) -> str:
    tree: dict[str, Any] = {
        "name": "corpus",
        "data": {"name": "synthetic"},
        "models": [{"name": "lenet300", "train": {"epochs": 1}}],
        "methods": [{"name": "magnitude"}],
        "sparsities": [0.5],
    }
    tree.update(changes)
    return json.dumps(tree)


def bomb(field: str) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join([*lines, f"{field}: *a8", "model: lenet300", "train: {}", ""])


def idx(type_code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def run_json(**changes: Any) -> str:
    info = json.loads(json.dumps(RUN_INFO))
    for dotted, value in changes.items():
        node = info
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return json.dumps(info)


def plan(*steps: Any) -> str:
    return json.dumps({"format": PLAN_FORMAT, "steps": list(steps)})


def safetensors(header: Any, body: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text) if length is None else length) + text + body


def f32(name: str, shape: list[int]) -> dict[str, Any]:
    size = int(np.prod(shape)) * 4
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [0, size]}}


CORPUS: dict[str, str | bytes] = {
    # recipes: `secateurs run FILE --out-root DIR`
    "recipe/alias-bomb.yaml": bomb("name"),
    "recipe/deep-nesting.yaml": "a: " + "[" * 3000 + "]" * 3000 + "\n",
    "recipe/escaping-name.yaml": recipe(name="../../escaped"),
    "recipe/absolute-name.yaml": recipe(name="/tmp/escaped"),
    "recipe/name-with-newline.yaml": recipe(name="corpus\n"),
    "recipe/long-name.yaml": recipe(name="n" * 300),
    "recipe/python-tag.yaml": "name: !!python/object/apply:os.system ['echo owned']\nmodel: lenet300\ntrain: {}\n",
    "recipe/infinite-epochs.yaml": "name: corpus\nmodel: lenet300\ntrain: {epochs: .inf}\n",
    "recipe/huge-seed.yaml": recipe(seed=10**30),
    "recipe/negative-seed.yaml": recipe(seed=-1),
    "recipe/not-a-mapping.yaml": "- name: corpus\n- model: lenet300\n",
    "recipe/invalid-utf8.yaml": b"name: \xff\xfe corpus\n",
    "recipe/unknown-key.yaml": recipe(trian={"epochs": 1}),
    "recipe/sparsity-nan.yaml": recipe(method={"name": "magnitude", "sparsity": float("nan")}),
    # suites: `secateurs bench FILE --out DIR`
    "suite/alias-bomb.yaml": bomb("name").replace("model: lenet300\ntrain: {}\n", "models: []\nmethods: []\n"),
    "suite/huge-seed.yaml": suite(seeds=[2**64]),
    "suite/unknown-model.yaml": suite(models=[{"name": "../../escaped"}]),
    "suite/escaping-label.yaml": suite(keep_runs=True, methods=[{"name": "magnitude", "label": "../../x"}]),
    "suite/duplicate-labels.yaml": suite(methods=[{"name": "magnitude"}, {"name": "magnitude"}]),
    "suite/not-yaml.yaml": "name: [corpus\nmodels: {\n",
    # IDX files: replace train-images-idx3-ubyte (images-*) or train-labels-idx1-ubyte (labels-*) of a valid set
    "idx/images-bad-magic.idx": b"\x01\x02" + idx(8, (24, 8, 8), bytes(24 * 64))[2:],
    "idx/images-truncated-payload.idx": idx(8, (24, 8, 8), bytes(24 * 64 - 1)),
    "idx/images-trailing-bytes.idx": idx(8, (24, 8, 8), bytes(24 * 64 + 3)),
    "idx/images-empty-but-huge-shape.idx": idx(8, (0, 2**31, 2**16, 2**16), b""),
    "idx/images-float32.idx": idx(0x0D, (24, 8, 8), bytes(24 * 64 * 4)),
    "idx/images-unknown-type.idx": idx(0x42, (24, 8, 8), bytes(24 * 64)),
    "idx/images-too-many-dimensions.idx": idx(8, (1,) * 17, b"\x00"),
    "idx/images-truncated-gzip.idx": gzip.compress(idx(8, (24, 8, 8), bytes(24 * 64)), mtime=0)[:40],
    "idx/labels-negative.idx": idx(9, (24,), bytes([255]) * 24),
    "idx/labels-two-dimensional.idx": idx(8, (24, 1), bytes(24)),
    "idx/labels-count-mismatch.idx": idx(8, (23,), bytes(23)),
    # CIFAR-10 binary: replace data_batch_1.bin of a valid set
    "cifar/batch-truncated.bin": bytes(3073 + 100),
    "cifar/batch-label-out-of-range.bin": bytes([200]) + bytes(3072),
    "cifar/batch-empty.bin": b"",
    # run.json of a finished lenet300 run: `secateurs eval RUN`
    "run/deep-nesting.json": "[" * 5000 + "]" * 5000,
    "run/not-an-object.json": "[1, 2, 3]",
    "run/truncated.json": run_json()[:60],
    "run/invalid-utf8.json": b'{"kind": "\xff"}',
    "run/missing-model.json": json.dumps({k: v for k, v in RUN_INFO.items() if k != "model"}),
    "run/huge-input-shape.json": run_json(model__input_shape=[1, 5000, 5000]),
    "run/input-shape-is-a-number.json": run_json(model__input_shape=28),
    "run/classes-are-a-string.json": run_json(model__num_classes="10"),
    "run/classes-nan.json": run_json(model__num_classes=float("nan")),
    "run/model-name-is-a-list.json": run_json(model__name=["lenet300"]),
    "run/config-is-a-list.json": run_json(config=[]),
    "run/dataset-name-is-a-number.json": run_json(config__data__name=7),
    "run/preprocessing-nan.json": run_json(preprocessing__mean=[float("nan")]),
    "run/preprocessing-wrong-channels.json": run_json(preprocessing__std=[0.2, 0.2, 0.2]),
    "run/metrics-not-an-object.json": run_json(metrics=[0.5]),
    # plan.json beside a finished lenet5 run: `secateurs eval RUN`
    "plan/wrong-format.json": json.dumps({"format": "secateurs-plan/0", "steps": []}),
    "plan/steps-not-a-list.json": json.dumps({"format": PLAN_FORMAT, "steps": {"root": "features.0"}}),
    "plan/infinite-channels.json": plan({"root": "features.0", "channels": float("inf"), "removed": [1]}),
    "plan/infinite-index.json": plan({"root": "features.0", "channels": 6, "removed": [float("inf")]}),
    "plan/unknown-layer.json": plan({"root": "features.9", "channels": 6, "removed": [1]}),
    "plan/removes-every-channel.json": plan({"root": "features.0", "channels": 6, "removed": [0, 1, 2, 3, 4, 5]}),
    "plan/repeated-index.json": plan({"root": "features.0", "channels": 6, "removed": [1, 1]}),
    "plan/indices-as-a-string.json": plan({"root": "features.0", "channels": 6, "removed": "12"}),
    "plan/channel-count-mismatch.json": plan({"root": "features.0", "channels": 7, "removed": [1]}),
    "plan/root-is-the-model.json": plan({"root": "", "channels": 6, "removed": [1]}),
    # safetensors: replace model.safetensors (model-*) or masks.safetensors (masks-*) of the lenet300 run
    "safetensors/model-empty.safetensors": b"",
    "safetensors/model-huge-header-length.safetensors": safetensors(f32("x", [2]), bytes(8), length=2**63),
    "safetensors/model-header-not-json.safetensors": safetensors(b"{not json", bytes(8)),
    "safetensors/model-truncated-data.safetensors": safetensors(f32("features.0.weight", [300, 784]), bytes(100)),
    "safetensors/model-offsets-out-of-range.safetensors": safetensors(
        {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 2**40]}}, bytes(8)
    ),
    "safetensors/model-unknown-dtype.safetensors": safetensors(
        {"x": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)
    ),
    "safetensors/model-wrong-names.safetensors": safetensors(f32("layer.weight", [2]), bytes(8)),
    "safetensors/masks-wrong-shape.safetensors": safetensors(
        {"classifier.weight": {"dtype": "BOOL", "shape": [10, 99], "data_offsets": [0, 990]}}, bytes(990)
    ),
    "safetensors/masks-unknown-layer.safetensors": safetensors(
        {"features.7.weight": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, bytes(2)
    ),
}


def main() -> None:
    for name, content in CORPUS.items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    print(f"wrote {len(CORPUS)} files under {HERE}")


if __name__ == "__main__":
    main()
