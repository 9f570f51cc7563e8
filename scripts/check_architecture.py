"""Check secateurs' import graph against the layer contract of ARCHITECTURE.md.

Three rules, each a failure naming the offending import (file:line):

1. **Layers.** Every module belongs to a package of one layer (`LAYERS`, lowest first). A module may
   import its own package and any package of a lower layer; packages of one layer are independent
   unless `SIBLINGS` lets one read the other. Imports under ``if TYPE_CHECKING:`` count too.
2. **No cycles.** The module graph (every import, function-level ones included, ``TYPE_CHECKING``
   ones excluded) has no cycle, not even inside one package.
3. **Function-level imports** of secateurs modules only where they buy start-up time: in the CLI
   layer (`LAZY_ALLOWED`), which must answer ``--help`` and bad arguments without importing torch.
   Optional third-party extras (onnx, matplotlib, timm, ...) are imported where they are used; this
   rule only looks at secateurs' own modules.

Run ``python scripts/check_architecture.py`` (``make lint`` does); exit code 1 lists every violation.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "secateurs"

LAYERS: list[list[str]] = [
    ["errors", "secateurs"],
    ["registry"],
    ["io"],
    ["runtime"],
    ["config", "layers"],
    ["data", "models"],
    ["metrics"],
    ["sparsity"],
    ["structure"],
    ["allocation"],
    ["scoring"],
    ["training"],
    ["runs"],
    ["deploy"],
    ["latency"],
    ["methods"],
    ["api"],
    ["bench", "analysis"],
    ["commands", "catalog", "cli", "__main__"],
]
"""Lowest first. ``secateurs`` is the package root (its ``__init__`` imports nothing eagerly)."""

SIBLINGS: set[tuple[str, str]] = {
    ("analysis", "bench"),  # the sensitivity report draws with the bench's plot helpers
    ("commands", "catalog"),  # `secateurs list`
    ("cli", "commands"),
    ("__main__", "cli"),
}
"""``(importer, imported)`` pairs of one layer that may import each other in that direction."""

LAZY_ALLOWED = ("commands", "cli", "catalog", "__main__")
"""Packages whose functions may import secateurs modules: the CLI starts without torch."""


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    function_level: bool
    type_checking: bool


def module_name(path: Path, source: Path = SOURCE) -> str:
    parts = path.relative_to(source.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package at ``source`` (a ``secateurs`` directory), by dotted name."""
    return {module_name(path, source): path for path in sorted(source.rglob("*.py"))}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "secateurs"


def resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    yield from _walk(tree, module, known, function_level=False, type_checking=False)


def _walk(
    node: ast.AST, module: str, known: dict[str, Path], *, function_level: bool, type_checking: bool
) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _statement(statement, module, known, function_level, True)
            for statement in child.orelse:
                yield from _statement(statement, module, known, function_level, type_checking)
            continue
        yield from _statement(child, module, known, function_level, type_checking)


def _statement(
    node: ast.AST, module: str, known: dict[str, Path], function_level: bool, type_checking: bool
) -> Iterator[Import]:
    if (
        isinstance(node, ast.ImportFrom)
        and node.module
        and node.level == 0
        and node.module.split(".")[0] == "secateurs"
    ):
        for alias in node.names:
            target = resolve(f"{node.module}.{alias.name}", known) if alias.name != "*" else None
            if target is None or target == node.module.rpartition(".")[0]:
                target = resolve(node.module, known)
            if target is not None:
                yield Import(module, target, node.lineno, function_level, type_checking)
        return
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "secateurs":
                target = resolve(alias.name, known)
                if target is not None:
                    yield Import(module, target, node.lineno, function_level, type_checking)
        return
    inner = function_level or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    yield from _walk(node, module, known, function_level=inner, type_checking=type_checking)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise KeyError(package)


def violations(source: Path = SOURCE) -> list[str]:
    """Every violation of the contract in the package at ``source``, one line each (empty: none)."""
    known = modules(source)
    problems: list[str] = []
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for module, path in known.items():
        package = package_of(module)
        try:
            own = layer_of(package)
        except KeyError:
            problems.append(f"{path}: package {package!r} is in no layer of scripts/check_architecture.py")
            continue
        for item in imports(module, path, known):
            location = f"{path.relative_to(source.parents[1])}:{item.line}"
            target = package_of(item.imported)
            if item.imported == module or (target == "secateurs" and item.imported == "secateurs"):
                pass
            if target != package and target != "secateurs":
                try:
                    theirs = layer_of(target)
                except KeyError:
                    theirs = -1
                allowed = theirs < own or (theirs == own and (package, target) in SIBLINGS)
                if not allowed:
                    problems.append(
                        f"{location}: {module} (layer {own}: {package}) imports {item.imported} "
                        f"(layer {theirs}: {target}); a layer imports only lower layers"
                    )
            if item.function_level and package not in LAZY_ALLOWED:
                problems.append(
                    f"{location}: {module} imports {item.imported} inside a function; import it at the top "
                    f"(function-level imports are for the CLI's start-up: {', '.join(LAZY_ALLOWED)})"
                )
            if not item.type_checking and item.imported != module:
                graph[module].add(item.imported)
                where.setdefault((module, item.imported), location)
    for cycle in cycles(graph):
        steps = " → ".join([*cycle, cycle[0]])
        problems.append(f"import cycle: {steps} (first edge at {where[(cycle[0], cycle[1 % len(cycle)])]})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(component)) for component in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    path = [start]
    seen = {start}
    node = start
    while True:
        successors = sorted(s for s in graph[node] if s in component)
        if start in successors and len(path) > 1:
            return path
        following = next((s for s in successors if s not in seen), successors[0])
        if following == start or following in seen:
            return path[path.index(following) :] if following in path else path
        path.append(following)
        seen.add(following)
        node = following


def main() -> int:
    problems = violations()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} architecture violation(s); the contract is in ARCHITECTURE.md", file=sys.stderr)
        return 1
    print(f"architecture: {len(modules())} modules, {len(LAYERS)} layers, no violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
