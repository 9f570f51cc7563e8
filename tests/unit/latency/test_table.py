"""Per-layer latency tables (`structure.latency_table`) and latency-aware channel pruning with injected tables.

Nothing here asserts a timing: the tables that drive allocations are written by the tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import secateurs as sec
from secateurs.cli import main
from secateurs.errors import ConfigError
from secateurs.latency import table as lt
from secateurs.models import build_model
from secateurs.structure.groups import channel_graph

SHAPE = (1, 28, 28)


def shape(name: str, in_groups: tuple[str, ...] = (), out_groups: tuple[str, ...] = ()) -> lt.LayerShape:
    return lt.LayerShape(
        name=name, kind="conv", in_channels=16, out_channels=16, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
        dilation=(1, 1), bias=False, spatial=(8, 8), in_groups=in_groups, out_groups=out_groups,
    )  # fmt: skip


def small_table() -> lt.LatencyTable:
    shapes = {"a": shape("a", out_groups=("g",)), "b": shape("b", in_groups=("g",))}
    layers = {
        "a": lt.LayerTable([16], [8, 16], [[1.0, 2.0]]),
        "b": lt.LayerTable([8, 16], [16], [[3.0], [5.0]]),
    }
    return lt.LatencyTable(key={"layers": "x"}, layers=layers, shapes=shapes)


def test_grid_widths() -> None:
    assert lt.grid_widths(20, 8, True) == [8, 16, 20]
    assert lt.grid_widths(64, 16, True) == [16, 32, 48, 64]
    assert lt.grid_widths(8, 8, True) == [8]
    assert lt.grid_widths(64, 8, False) == [64]


def test_bilinear_lookup_is_exact_on_the_grid_and_clamped_below_it() -> None:
    table = lt.LatencyTable(
        key={}, layers={"a": lt.LayerTable([8, 16], [8, 16], [[1.0, 2.0], [3.0, 5.0]])}, shapes={"a": shape("a")}
    )
    assert table.layer_ms("a", 16, 8) == 3.0
    # out 12 → rows 1.5 and 4.0; in 12 → 2.75
    assert table.layer_ms("a", 12, 12) == pytest.approx(2.75)
    assert table.layer_ms("a", 4, 2) == 1.0  # no gain promised below the smallest timed width


def test_total_follows_a_group_into_every_layer_it_touches() -> None:
    table = small_table()
    assert table.total_ms({}) == 7.0
    assert table.total_ms({"g": 8}) == 1.0 + 3.0  # a writes 8 channels, b reads 8
    assert table.total_ms({"g": 4}) == pytest.approx(1.5 + 4.0)


def test_layer_shapes_of_resnet8() -> None:
    model = build_model("resnet8", SHAPE, 10)
    shapes, untimed = lt.layer_shapes(channel_graph(model, torch.randn(2, *SHAPE)), SHAPE)
    by_name = {s.name: s for s in shapes}
    assert untimed == []
    assert len(shapes) == 10  # 9 convolutions and the classifier
    assert by_name["stem.0"].in_groups == () and by_name["stem.0"].out_groups == ("stem.0",)
    assert by_name["stem.0"].spatial == (28, 28)
    assert by_name["stages.2.0.conv2"].spatial == (7, 7)
    assert by_name["stages.2.0.conv2"].in_groups == ("stages.2.0.conv1",)
    assert by_name["classifier"].kind == "linear" and by_name["classifier"].out_groups == ()
    assert lt.grid_points(by_name["stem.0"], 8) == ([1], [8, 16])
    assert lt.grid_points(by_name["classifier"], 16) == ([16, 32, 48, 64], [10])


def test_measure_table_times_every_grid_point() -> None:
    layer = lt.LayerShape(
        name="conv", kind="conv", in_channels=8, out_channels=12, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
        dilation=(1, 1), bias=True, spatial=(6, 6), in_groups=("p",), out_groups=("q",),
    )  # fmt: skip
    table = lt.measure_table([layer], batch=2, threads=1, step=4, repeats=2)
    timed = table.layers["conv"]
    assert (timed.in_widths, timed.out_widths) == ([4, 8], [4, 8, 12])
    assert all(value > 0 for row in timed.ms for value in row)
    assert table.key["batch"] == 2 and table.key["threads"] == 1 and table.key["step"] == 4
    assert table.key["torch"] == torch.__version__


def test_cache_round_trips_and_is_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = [shape("a", out_groups=("g",)), shape("b", in_groups=("g",))]
    calls: list[dict[str, Any]] = []

    def fake_measure(shapes: list[lt.LayerShape], **kwargs: Any) -> lt.LatencyTable:
        calls.append(kwargs)
        made = small_table()
        key = lt.table_key(shapes, batch=kwargs["batch"], threads=kwargs["threads"], step=kwargs["step"])
        return lt.LatencyTable(key=key, layers=made.layers, shapes={s.name: s for s in shapes})

    monkeypatch.setattr(lt, "measure_table", fake_measure)
    first, record = lt.load_or_measure(shapes, threads=1, step=8, cache_dir=tmp_path)
    assert record["source"] == "measured" and len(calls) == 1
    second, record = lt.load_or_measure(shapes, threads=1, step=8, cache_dir=tmp_path)
    assert record["source"] == "cache" and len(calls) == 1
    assert second.layers == first.layers and second.key == first.key
    assert second.total_ms({"g": 8}) == 4.0
    # another thread count (or batch, step, torch version, machine, model) is another table
    _, record = lt.load_or_measure(shapes, threads=2, step=8, cache_dir=tmp_path)
    assert record["source"] == "measured" and len(calls) == 2
    # an explicit file is used as given, and must match the model
    _, record = lt.load_or_measure(shapes, table_file=Path(record["path"]))
    assert record["source"] == "file" and len(calls) == 2
    other = [shape("a", out_groups=("g",)), shape("c", in_groups=("g",))]
    with pytest.raises(ConfigError, match="has no layer 'c'"):
        lt.load_or_measure(other, table_file=Path(record["path"]))


def mac_table(model_name: str, step: int, path: Path) -> Path:
    """A table whose milliseconds are each layer's MACs / 1e6 (bilinear in the widths: interpolation is exact)."""
    model = build_model(model_name, SHAPE, 10)
    shapes, _ = lt.layer_shapes(channel_graph(model, torch.randn(2, *SHAPE)), SHAPE)
    layers = {}
    for s in shapes:
        in_widths, out_widths = lt.grid_points(s, step)
        if s.kind == "linear":
            positions = math.prod(s.spatial)
        else:
            positions = math.prod(
                (size + 2 * p - d * (k - 1) - 1) // st + 1
                for size, p, d, k, st in zip(s.spatial, s.padding, s.dilation, s.kernel, s.stride, strict=True)
            )
        area = s.kernel[0] * s.kernel[1]
        ms = [[i * o * area * positions / 1e6 for o in out_widths] for i in in_widths]
        layers[s.name] = {"in_widths": in_widths, "out_widths": out_widths, "ms": ms}
    path.write_text(json.dumps({"format": lt.FORMAT, "key": {}, "layers": layers}))
    return path


@pytest.mark.parametrize("method", ["l2-filter", "random-channel"])
def test_latency_aware_pruning_on_a_mac_table_removes_that_fraction_of_the_macs(tmp_path: Path, method: str) -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", SHAPE, 10).eval()
    table = mac_table("resnet8", 8, tmp_path / "table.json")
    result = sec.prune(
        model, method, 0.5, example_inputs=torch.randn(2, *SHAPE), scope="global",
        latency_aware=True, latency_target=True, latency_table=str(table),
    )  # fmt: skip
    info = result.info
    predicted = info["latency_table"]
    # milliseconds ∝ MACs of the convolutions and the classifier: the predicted latency removed is the
    # realised MAC fraction removed (count_macs counts exactly these layers)
    assert 1 - predicted["predicted_ms"] / predicted["predicted_dense_ms"] == pytest.approx(
        info["realised"]["macs_removed"], abs=1e-9
    )
    assert info["realised"]["macs_removed"] >= 0.5
    assert info["target"] == {"quantity": "latency", "sparsity": 0.5, "scope": "latency-aware"}
    assert predicted["source"] == "file" and predicted["step"] == 8
    for root, entry in info["groups"].items():
        kept = entry["channels"] - entry["removed"]
        assert kept == entry["channels"] or kept % 8 == 0, root


def test_latency_aware_with_a_params_target_and_round_to_16(tmp_path: Path) -> None:
    model = build_model("resnet8", SHAPE, 10).eval()
    table = mac_table("resnet8", 16, tmp_path / "table.json")
    result = sec.prune(
        model, "l1-filter", 0.4, example_inputs=torch.randn(2, *SHAPE), latency_aware=True, round_to=16,
        latency_table=str(table),
    )  # fmt: skip
    assert result.info["realised"]["params_removed"] >= 0.4
    assert result.info["latency_table"]["step"] == 16
    assert all((e["channels"] - e["removed"]) % 16 == 0 for e in result.info["groups"].values())


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("magnitude", {"latency_aware": True}, "latency_aware"),
        ("tp-magnitude", {"latency_aware": True}, "latency_aware"),
        ("l2-filter", {"latency_target": True}, "latency_target=true needs latency_aware=true"),
        ("l2-filter", {"latency_aware": True, "target": "speed"}, "target: Input should be 'params', 'macs' or"),
        ("hap", {"latency_aware": True, "implant_ratio": 0.1}, "does not price implants"),
        ("l2-filter", {"latency_aware": True, "scope": "layerwise"}, "scope 'layerwise' is not accepted"),
        ("l2-filter", {"latency_aware": True, "latency_table": "/nonexistent.json"}, "does not exist"),
    ],
)
def test_bad_latency_options_are_one_line_config_errors(method: str, options: dict[str, Any], message: str) -> None:
    model = build_model("resnet8", SHAPE, 10)
    with pytest.raises(ConfigError, match=message) as caught:
        sec.prune(model, method, 0.5, example_inputs=torch.randn(2, *SHAPE), **options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "magnitude", "--latency-aware"], "--latency-aware does not apply to method 'magnitude'"),
        (["--method", "magnitude", "--round-to", "8"], "--round-to does not apply to method 'magnitude'"),
        (["--method", "l2-filter", "--round-to", "8", "--option", "round_to=16"], "contradicts --option round_to=16"),
    ],
)
def test_cli_flags_for_methods_without_them_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    code = main(
        ["prune", "--from", str(tmp_path / "run"), "--sparsity", "0.5", "--out", str(tmp_path / "o"), *arguments]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and "Traceback" not in error and len(error.splitlines()) == 1
