"""No unpickling anywhere in the package: a static scan of every module's syntax tree.

Flagged: ``pickle``/``cPickle``/``_pickle``/``dill``/``cloudpickle`` ``load``/``loads``/``Unpickler`` (called or
imported), ``torch.load`` without ``weights_only=True``, ``numpy.load`` with ``allow_pickle`` other than a
literal ``False``, ``joblib.load``, ``marshal.load``/``loads``, ``shelve.open``, ``pandas.read_pickle``,
and any import of ``dill``, ``cloudpickle``, ``joblib`` or ``shelve``. Aliases (``import numpy as np``,
``from torch import load``) are resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "src" / "secateurs"
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle"}
FORBIDDEN_MODULES = {"dill", "cloudpickle", "joblib", "shelve"}
ALWAYS_UNSAFE = {
    **{f"{module}.{name}": "unpickles" for module in PICKLERS for name in ("load", "loads", "Unpickler")},
    "joblib.load": "unpickles",
    "marshal.load": "unmarshals code objects",
    "marshal.loads": "unmarshals code objects",
    "shelve.open": "unpickles",
    "pandas.read_pickle": "unpickles",
}


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unpickling_calls(source: str, filename: str = "<source>") -> list[str]:
    """Every unpickling call or import in ``source``, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name → dotted name it stands for
    findings: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    findings.append(f"{filename}:{node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                aliases[alias.asname or alias.name] = dotted
                if node.module.split(".")[0] in FORBIDDEN_MODULES or dotted in ALWAYS_UNSAFE:
                    findings.append(f"{filename}:{node.lineno}: imports {dotted}")

    def dotted_name(expression: ast.expr) -> str | None:
        if isinstance(expression, ast.Name):
            return aliases.get(expression.id, expression.id)
        if isinstance(expression, ast.Attribute):
            base = dotted_name(expression.value)
            return f"{base}.{expression.attr}" if base else None
        return None

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted_name(node.func)
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        where = f"{filename}:{node.lineno}: {name}"
        if name in ALWAYS_UNSAFE:
            findings.append(f"{where} {ALWAYS_UNSAFE[name]}")
        elif name in ("torch.load", "torch.serialization.load") and not _is_constant(
            keywords.get("weights_only"), True
        ):
            findings.append(f"{where} without weights_only=True")
        elif name == "numpy.load" and "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
            findings.append(f"{where} with allow_pickle not False")
    return findings


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.loads(b'')",
        "import pickle as p\np.load(f)",
        "from pickle import loads\nloads(b'')",
        "import _pickle\n_pickle.Unpickler(f)",
        "import torch\ntorch.load('m.pt')",
        "import torch\ntorch.load('m.pt', weights_only=False)",
        "import torch\nflag = True\ntorch.load('m.pt', weights_only=flag)",
        "from torch import load\nload('m.pt')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import dill",
        "from cloudpickle import loads",
        "import joblib\njoblib.load('m.joblib')",
        "import marshal\nmarshal.loads(b'')",
        "import shelve\nshelve.open('db')",
        "import pandas as pd\npd.read_pickle('x')",
    ],
)
def test_the_scanner_finds_unpickling(snippet: str) -> None:
    assert unpickling_calls(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('m.pt', weights_only=True)",
        "import numpy as np\nnp.load('a.npz', allow_pickle=False)",
        "import numpy\nnumpy.load('a.npz')",
        "import json\njson.loads('{}')",
        "from safetensors.torch import load_file\nload_file('m.safetensors')",
        "def load(x): return x\nload(1)",
    ],
)
def test_the_scanner_lets_safe_loading_through(snippet: str) -> None:
    assert unpickling_calls(snippet) == []


def test_the_package_never_unpickles() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50  # the whole package is scanned
    findings = [finding for path in modules for finding in unpickling_calls(path.read_text(), str(path))]
    assert findings == []
