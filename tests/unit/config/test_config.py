"""Recipes, overrides, safe names, `PruneConfig` and bench suites: every bad input names what was wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secateurs.bench.suite import cells, load_suite
from secateurs.config import PruneConfig, load_recipe, parse_overrides, set_path
from secateurs.errors import ConfigError, UsageError
from secateurs.io.paths import safe_child

RECIPE = """\
name: lenet5-magnitude
seed: 3
data: {name: fashion-mnist}
model: lenet5
train: {epochs: 5, lr: 0.05}
method: {name: magnitude, sparsity: 0.9, scope: global}
finetune: {epochs: 1, lr: 0.01}
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ recipes
def test_a_valid_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, RECIPE))
    assert recipe.name == "lenet5-magnitude" and recipe.seed == 3 and recipe.model == "lenet5"
    assert recipe.train is not None and recipe.train.epochs == 5.0 and recipe.train.lr == 0.05
    assert recipe.method is not None
    assert (recipe.method.method, recipe.method.sparsity, recipe.method.scope) == ("magnitude", 0.9, "global")
    assert recipe.finetune is not None and recipe.finetune.epochs == 1.0
    assert recipe.calibration.size == 512 and recipe.measure.latency_batches == (1, 256)


@pytest.mark.parametrize(
    ("addition", "message"),
    [
        ("colour: red\n", "unknown key 'colour'"),
        ("measure: {latency_runs: 3}\n", "unknown key 'measure.latency_runs'"),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, addition: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"recipe .*recipe.yaml: {message}$"):
        load_recipe(write(tmp_path, RECIPE + addition))


def test_unknown_nested_key_via_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'train.epochz'"):
        load_recipe(write(tmp_path, RECIPE), ["train.epochz=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", r"train\.epochs: Input should be a valid number.* \(got 'abc'\)"),
        ("seed=[1]", r"seed: Input should be a valid integer \(got \[1\]\)"),
        (
            "method.scope=everywhere",
            r"method\.scope: Input should be 'layerwise', 'global' or 'normalized' \(got 'everywhere'\)",
        ),
        ("train.optimizer=rmsprop", r"train\.optimizer: Input should be 'sgd', 'adam' or 'adamw' \(got 'rmsprop'\)"),
        ("train.batch_size=0", r"train\.batch_size: Input should be greater than or equal to 1 \(got 0\)"),
    ],
)
def test_wrong_types_name_the_key_and_the_value(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe(write(tmp_path, RECIPE), [override])


def test_overrides_are_yaml_typed(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, RECIPE),
        [
            "method.sparsity=0.7",
            "train.epochs=2",
            "measure.latency=false",
            "measure.latency_batches=[1, 8]",
            "data.name=synthetic",
            "data.dir=/tmp/data=x",  # only the first '=' separates
            "calibration.size=64",
        ],
    )
    assert recipe.method is not None and recipe.method.sparsity == 0.7
    assert recipe.train is not None and recipe.train.epochs == 2.0
    assert recipe.measure.latency is False and recipe.measure.latency_batches == (1, 8)
    assert recipe.data.name == "synthetic" and recipe.data.dir == "/tmp/data=x"
    assert recipe.calibration.size == 64
    assert parse_overrides(["a.b=1", "c=x", "d=", "e=0.5", "f=true", "g=[unclosed"]) == [
        ("a.b", 1),
        ("c", "x"),
        ("d", ""),
        ("e", 0.5),
        ("f", True),
        ("g", "[unclosed"),
    ]


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match=r"--set expects key=value \(e.g. method.sparsity=0.7\), got 'sparsity'"):
        parse_overrides(["sparsity"])
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_overrides(["=3"])
    tree = {"seed": 1}
    with pytest.raises(ConfigError, match=r"--set seed.value: 'seed' is not a section"):
        set_path(tree, "seed.value", 2)
    set_path(tree, "a.b.c", 5)
    assert tree == {"seed": 1, "a": {"b": {"c": 5}}}


def test_from_and_train_conflict(tmp_path: Path) -> None:
    text = "name: x\nfrom: runs/dense\ntrain: {epochs: 1}\nmethod: {name: magnitude, sparsity: 0.5}\n"
    with pytest.raises(ConfigError, match=r"recipe .*: 'from' and 'train' exclude each other: the run given by "
                       r"'from' is the dense model$"):  # fmt: skip
        load_recipe(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"a recipe with 'from' needs a 'method' section$"):
        load_recipe(write(tmp_path, "name: x\nfrom: runs/dense\n"))
    with pytest.raises(ConfigError, match=r"needs either 'from' \(an existing run\) or both 'model' and 'train'$"):
        load_recipe(write(tmp_path, "name: x\nmodel: lenet5\n"))
    recipe = load_recipe(write(tmp_path, "name: x\nfrom: runs/dense\nmethod: {name: random, sparsity: 0.5}\n"))
    assert recipe.source == "runs/dense" and recipe.train is None


def test_missing_name_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        load_recipe(write(tmp_path, "model: lenet5\ntrain: {epochs: 1}\n"))


def test_invalid_yaml_gives_the_line(tmp_path: Path) -> None:
    text = "name: x\nmodel: lenet5\ntrain: {epochs: 1\nmethod: {name: magnitude}\n"
    with pytest.raises(ConfigError, match=r"recipe .*recipe.yaml is not valid YAML at line [34]$"):
        load_recipe(write(tmp_path, text))
    bad_indent = "name: x\nmodel: lenet5\n  train: 3\n"
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 3$"):
        load_recipe(write(tmp_path, bad_indent))
    with pytest.raises(ConfigError, match="must be a YAML mapping, found list"):
        load_recipe(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match=r"recipe .*nothing.yaml does not exist"):
        load_recipe(tmp_path / "nothing.yaml")


# ------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ".hidden", "..", "a..b", "", "a b", "a\\b"])
def test_safe_child_refuses_paths(tmp_path: Path, name: str) -> None:
    message = "must be a plain name (letters, digits, '.', '_', '-'; no '/', no '..')"
    with pytest.raises(ConfigError, match=re.escape(message)):
        safe_child(tmp_path, name)


@pytest.mark.parametrize("name", ["run", "lenet5-magnitude_0.9", "A1"])
def test_safe_child_accepts_plain_names(tmp_path: Path, name: str) -> None:
    assert safe_child(tmp_path, name) == tmp_path / name


# ------------------------------------------------------------------------------------- PruneConfig
def test_prune_config_accepts_name_as_alias() -> None:
    assert PruneConfig.model_validate({"name": "magnitude", "sparsity": 0.5}).method == "magnitude"
    assert PruneConfig(method="random", sparsity=0.0).method == "random"
    config = PruneConfig.model_validate({"method": "magnitude", "sparsity": 0.25})
    assert (config.scope, config.granularity, config.target, config.min_keep) == (None, "element", "params", 1)


@pytest.mark.parametrize("sparsity", [1.0, -0.01, 1.5])
def test_prune_config_rejects_sparsity_outside_the_range(tmp_path: Path, sparsity: float) -> None:
    message = f"method.sparsity: sparsity must be in [0, 1) (the fraction removed), got {sparsity}"
    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        load_recipe(write(tmp_path, RECIPE), [f"method.sparsity={sparsity}"])


def test_prune_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'method.sparsty'"):
        load_recipe(write(tmp_path, RECIPE), ["method.sparsty=0.5"])
    with pytest.raises(ConfigError, match=r"method\.min_keep: Input should be greater than or equal to 0 \(got -1\)"):
        load_recipe(write(tmp_path, RECIPE), ["method.min_keep=-1"])
    with pytest.raises(ConfigError, match=r"method\.target: Input should be 'params', 'macs' or 'channels'"):
        load_recipe(write(tmp_path, RECIPE), ["method.target=flops"])


# -------------------------------------------------------------------------------------------- suites
SUITE = """\
name: tiny
seeds: [0, 1]
models:
  - {name: lenet300, train: {epochs: 1}}
  - {name: lenet5, train: {epochs: 2}}
methods:
  - {name: magnitude}
  - {name: random, sparsities: [0.3]}
  - {name: magnitude, scope: global, label: magnitude-raw}
sparsities: [0.5, 0.9]
finetune: {epochs: 0.5}
"""


def test_suite_expands_cells_in_the_documented_order(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, SUITE, "suite.yaml"))
    keys = [cell.key for cell in cells(suite)]
    grid = (("magnitude", ("0.5", "0.9")), ("random", ("0.3",)), ("magnitude-raw", ("0.5", "0.9")))
    expected = [
        f"{model}|{method}|{sparsity}|{seed}"
        for seed in (0, 1)
        for model in ("lenet300", "lenet5")
        for method, sparsity_list in grid
        for sparsity in sparsity_list
    ]
    assert keys == expected and len(keys) == 2 * 2 * 5 == 20
    first = next(iter(cells(suite)))
    assert first.model.train.epochs == 1.0 and first.sparsity == 0.5 and first.seed == 0
    config = suite.methods[2].prune_config(0.9)
    assert (config.method, config.scope, config.sparsity) == ("magnitude", "global", 0.9)
    assert suite.measure.latency is False


def test_suite_overrides(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, SUITE, "suite.yaml"), ["seeds=[5]", "sparsities=[0.8]"])
    assert [cell.key for cell in cells(suite)][:2] == ["lenet300|magnitude|0.8|5", "lenet300|random|0.3|5"]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            ("  - {name: random, sparsities: [0.3]}\n", "  - {name: magnitude, sparsities: [0.3]}\n"),
            ConfigError,
            r"suite .*: method labels must be unique; repeated: magnitude \(add 'label'\)$",
        ),
        (
            ("  - {name: random, sparsities: [0.3]}\n", "  - {name: random, options: {strength: 2}}\n"),
            ConfigError,
            r"method 'random': unknown key 'strength'$",
        ),
        (
            ("  - {name: random, sparsities: [0.3]}\n", "  - {name: shears}\n"),
            UsageError,
            r"unknown method 'shears'; accepted: .*magnitude.*random",
        ),
        (
            ("  - {name: random, sparsities: [0.3]}\n", "  - {name: random, sparsities: [1.0]}\n"),
            ConfigError,
            r"method 'random': sparsity: sparsity must be in \[0, 1\)",
        ),
        (
            ("  - {name: random, sparsities: [0.3]}\n", "  - {name: random, scope: all}\n"),
            ConfigError,
            r"methods\.1\.scope|scope",
        ),
        (
            ("sparsities: [0.5, 0.9]\n", ""),
            ConfigError,
            r"method 'magnitude' has no sparsities \(set 'sparsities' or 'rates' \+ 'rounds'\)$",
        ),
        (("seeds: [0, 1]\n", "seeds: []\n"), ConfigError, "a suite needs at least one seed, one model and one method$"),
    ],
)
def test_suite_errors_come_before_any_training(
    tmp_path: Path, change: tuple[str, str], error: type[Exception], message: str
) -> None:
    old, new = change
    assert old in SUITE
    path = write(tmp_path, SUITE.replace(old, new), "suite.yaml")
    with pytest.raises(error, match=message):
        load_suite(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]  # nothing was written
