"""The layer contract: the checker passes on the package, catches each kind of violation, and matches the docs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
GUARDED = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    {}\n"


@pytest.fixture(scope="module")
def checker(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("check_architecture")


def write(root: Path, files: dict[str, str]) -> Path:
    package = root / "secateurs"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_package_keeps_the_contract(checker: ModuleType) -> None:
    assert checker.violations() == []


def test_a_wrong_way_import_a_cycle_and_a_function_level_import_are_each_caught(
    checker: ModuleType, tmp_path: Path
) -> None:
    package = write(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "from secateurs.methods.base import Method\n",  # layer 0 importing layer 15
            "methods/__init__.py": "",
            "methods/base.py": "class Method: ...\n",
            "sparsity/__init__.py": "",
            "sparsity/a.py": "from secateurs.sparsity import b\n",
            "sparsity/b.py": "from secateurs.sparsity import a\n",
            "scoring/__init__.py": "",
            "scoring/late.py": "def f() -> None:\n    from secateurs.sparsity import a\n",
            "mystery/__init__.py": "",
        },
    )
    problems = checker.violations(package)
    assert any("secateurs.errors (layer 0: errors) imports secateurs.methods.base" in p for p in problems)
    assert any(
        p.startswith("import cycle: secateurs.sparsity.a → secateurs.sparsity.b → secateurs.sparsity.a")
        for p in problems
    )
    assert any("secateurs.scoring.late imports secateurs.sparsity.a inside a function" in p for p in problems)
    assert any("package 'mystery' is in no layer" in p for p in problems)
    assert len(problems) == 4, problems


def test_type_checking_imports_obey_the_layers_but_make_no_cycle(checker: ModuleType, tmp_path: Path) -> None:
    package = write(
        tmp_path,
        {
            "__init__.py": "",
            "sparsity/__init__.py": "",
            "sparsity/a.py": GUARDED.format("from secateurs.sparsity import b"),
            "sparsity/b.py": "from secateurs.sparsity import a\n",
            "io/__init__.py": GUARDED.format("from secateurs.sparsity import a"),
        },
    )
    problems = checker.violations(package)
    assert problems == [p for p in problems if "secateurs.io (layer 2: io) imports secateurs.sparsity.a" in p]
    assert len(problems) == 1


def test_architecture_md_lists_the_layers_of_the_checker(checker: ModuleType) -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    documented = re.findall(r"^\| (\d+) \| ([^|]+) \|", text, flags=re.MULTILINE)
    layers = [[name.strip(" `") for name in cell.split(",")] for _, cell in documented]
    expected = [[("the package root" if n == "secateurs" else n) for n in layer] for layer in checker.LAYERS]
    assert layers == expected
