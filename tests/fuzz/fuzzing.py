"""Shared pieces of the property-based fuzz tests (hypothesis).

Every fuzz test asserts one contract: the input either loads, or the parser raises a `UsageError`
(the CLI's exit 2) whose message is one non-empty line; any other exception fails the test, and every
example has a deadline, so a hang fails too.

By default the examples are derandomised (the same ones on every CI run, no flakiness) and few. To
fuzz for real, run e.g. ``SECATEURS_FUZZ_EXAMPLES=5000 SECATEURS_FUZZ_RANDOM=1 pytest tests/fuzz``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from secateurs.errors import UsageError

EXAMPLES = int(os.environ.get("SECATEURS_FUZZ_EXAMPLES", "60"))
RANDOM = os.environ.get("SECATEURS_FUZZ_RANDOM", "") not in ("", "0")


def fuzz_settings(examples: int = EXAMPLES, seconds: float = 5.0) -> settings:
    """Hypothesis settings for one fuzz test: ``examples`` examples, each with a ``seconds`` deadline."""
    return settings(
        max_examples=examples if not RANDOM else max(examples, EXAMPLES),
        deadline=timedelta(seconds=seconds),
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,  # scratch folders: every example copies afresh
        ],
    )


def loads_or_fails_cleanly(action: Callable[[], Any]) -> str | None:
    """Run ``action``; None if it succeeded, the message if it raised a clean one-line `UsageError`."""
    try:
        action()
    except UsageError as error:
        message = str(error)
        assert message.strip(), "an empty error message"
        assert "\n" not in message and "\r" not in message, f"a multi-line error message: {message!r}"
        return message
    return None


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-3, 300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "..", "../x", "/etc", "lenet300", "magnitude", "fashion-mnist", "synthetic", "0.5"])
)
"""JSON/YAML leaves, biased towards the values parsers special-case."""

json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, tree: Any, keys: tuple[str, ...] = ()) -> Any:
    """``tree`` (nested dicts/lists) with one to three of its entries replaced, removed or added."""
    import copy

    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(1, 3))):
        node = tree
        while True:  # walk down to a random container
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            containers = [(key, value) for key, value in children if isinstance(value, dict | list) and value]
            if not containers or not draw(st.booleans()):
                break
            node = draw(st.sampled_from(containers))[1]
        if isinstance(node, dict):
            action = draw(st.sampled_from(["replace", "remove", "add"]))
            if action == "add" or not node:
                node[draw(st.sampled_from(keys) | st.text(max_size=8)) if keys else draw(st.text(max_size=8))] = draw(
                    json_values
                )
            elif action == "remove":
                del node[draw(st.sampled_from(sorted(node, key=str)))]
            else:
                node[draw(st.sampled_from(sorted(node, key=str)))] = draw(json_values)
        elif node:
            node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
    return tree


@st.composite
def text_edits(draw: st.DrawFn, text: str) -> str:
    """``text`` with one to five characters inserted, deleted or replaced (YAML-significant ones favoured)."""
    alphabet = st.sampled_from([*list(":{}[],&*!|>-#'\"\t\n %@`?\\\x00\u2028é"), "<<", "---", "...", "!!python/object"])
    for _ in range(draw(st.integers(1, 5))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(alphabet | st.text(max_size=3))
        if action == "insert":
            text = text[:position] + piece + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + piece + text[position + 1 :]
    return text
