"""Append-only registries: name → object (models, datasets, methods, scorers, granularities) and
class → object (layer handlers, looked up along the MRO).

Each registry is the single place a family of plug-ins is looked up; registry-wide tests iterate
over `Registry.names()` so a new entry is tested automatically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from secateurs.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plug-ins. Names are unique; entries are never removed."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` and return it unchanged."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the entry called ``name``; an unknown name is a `UsageError` listing the accepted ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}; accepted: {', '.join(sorted(self._entries))}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        yield from sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class TypeRegistry(Generic[T]):
    """Plug-ins keyed by a class, looked up along an instance's MRO (a subclass finds its base's entry).

    Append-only like `Registry`: a class is registered once and never removed.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[type, T] = {}

    def add(self, key: type, obj: T) -> None:
        if key in self._entries:
            raise ValueError(f"{self.kind} for {key.__qualname__} is already registered")
        self._entries[key] = obj

    def lookup(self, cls: type) -> T | None:
        """The entry of the first class in ``cls.__mro__`` that has one, or None."""
        for base in cls.__mro__:
            entry = self._entries.get(base)
            if entry is not None:
                return entry
        return None

    def types(self) -> list[type]:
        """The registered classes, in registration order."""
        return list(self._entries)

    def items(self) -> Iterator[tuple[type, T]]:
        yield from self._entries.items()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
