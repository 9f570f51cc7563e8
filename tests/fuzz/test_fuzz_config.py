"""Fuzzing the recipe parser (`config.load_recipe`, ``--set`` overrides) and the suite parser (`load_suite`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import fuzz_settings, loads_or_fails_cleanly, mutated, text_edits
from hypothesis import given
from hypothesis import strategies as st

from secateurs.bench.suite import load_suite
from secateurs.config import MAX_YAML_VALUES, load_recipe
from secateurs.errors import ConfigError

RECIPE: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "data": {"name": "synthetic"},
    "model": "lenet300",
    "train": {"epochs": 1, "lr": 0.05, "batch_size": 32, "milestones": [0.5]},
    "method": {"name": "magnitude", "sparsity": 0.5, "scope": "global", "options": {}},
    "finetune": {"epochs": 0.5},
    "calibration": {"size": 64},
    "measure": {"latency": False, "latency_batches": [1, 8]},
}
RECIPE_KEYS = (*RECIPE, "from", "description")

SUITE: dict[str, Any] = {
    "name": "fuzz",
    "data": {"name": "synthetic"},
    "seeds": [0, 1],
    "models": [{"name": "lenet300", "train": {"epochs": 1}}],
    "methods": [{"name": "magnitude"}, {"name": "random", "label": "r", "sparsities": [0.3]}],
    "sparsities": [0.5, 0.9],
    "finetune": {"epochs": 0.5},
    "keep_runs": True,
}
SUITE_KEYS = (*SUITE, "description", "calibration", "measure")


def parse(text: str | bytes, loader: Any, overrides: tuple[str, ...] = ()) -> str | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        return loads_or_fails_cleanly(lambda: loader(path, overrides))


def test_the_seeds_of_the_fuzzers_are_valid() -> None:
    assert parse(yaml.safe_dump(RECIPE), load_recipe) is None
    assert parse(yaml.safe_dump(SUITE), load_suite) is None


@fuzz_settings()
@given(st.binary(max_size=600))
def test_recipe_from_arbitrary_bytes(data: bytes) -> None:
    parse(data, load_recipe)


@fuzz_settings()
@given(mutated(RECIPE, RECIPE_KEYS))
def test_recipe_with_mutated_values(tree: dict[str, Any]) -> None:
    parse(yaml.safe_dump(tree), load_recipe)


@fuzz_settings()
@given(text_edits(yaml.safe_dump(RECIPE, default_flow_style=True)) | text_edits(yaml.safe_dump(RECIPE)))
def test_recipe_with_edited_text(text: str) -> None:
    parse(text, load_recipe)


@fuzz_settings()
@given(st.lists(st.text(max_size=30) | st.sampled_from(["train.epochs=.inf", "seed=1e99", "name=../x", "a..b=1"])))
def test_recipe_overrides(overrides: list[str]) -> None:
    parse(yaml.safe_dump(RECIPE), load_recipe, tuple(overrides))


@fuzz_settings()
@given(mutated(SUITE, SUITE_KEYS))
def test_suite_with_mutated_values(tree: dict[str, Any]) -> None:
    parse(yaml.safe_dump(tree), load_suite)


@fuzz_settings()
@given(text_edits(yaml.safe_dump(SUITE, default_flow_style=True)) | st.binary(max_size=400).map(bytes))
def test_suite_with_edited_text(text: str | bytes) -> None:
    parse(text, load_suite)


@st.composite
def alias_documents(draw: st.DrawFn) -> str:
    """Chains of anchors whose aliases multiply: ``a1: &a1 [*a0, *a0, ...]`` (billion-laughs style)."""
    fan_out, depth = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    lines = ["a0: &a0 [lol, lol]"]
    for level in range(1, depth + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * fan_out)}]")
    field = draw(st.sampled_from(["name", "model", "description", "train", "method"]))
    lines.append(f"{field}: *a{depth}")
    return "\n".join(lines) + "\nname: x\n" * (field != "name")


@fuzz_settings(examples=30)
@given(alias_documents())
def test_alias_bombs_are_refused_quickly(text: str) -> None:
    parse(text, load_recipe)
    parse(text, load_suite)


def test_a_billion_laughs_names_the_limit(tmp_path: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join([*lines, "name: *a8", "model: lenet300", "train: {}"]))
    with pytest.raises(ConfigError, match=f"expands to more than {MAX_YAML_VALUES:,} values"):
        load_recipe(path)


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_nesting_is_refused(tmp_path: Path, opening: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + opening * 5000 + "1" + ("]" if opening == "[" else "}") * 5000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("seed: 99999999999999999999", "seed"),
        ("seed: -1", "seed"),
        ("train: {epochs: .inf}", "epochs"),
        ("train: {lr: .inf}", "lr"),
        ("train: {gamma: .nan}", "gamma"),
    ],
)
def test_values_that_would_crash_later_are_refused_now(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("name: x\nmodel: lenet300\ntrain: {}\n" + text + "\n")
    if text.startswith("train"):
        path.write_text("name: x\nmodel: lenet300\n" + text + "\n")
    with pytest.raises(ConfigError, match=fragment):
        load_recipe(path)
