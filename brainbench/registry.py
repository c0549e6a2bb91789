"""Name -> factory registries, one per kind of plugin object."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from brainbench.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    provider: str
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps a name to a factory; objects are built on demand so listing stays cheap."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        provider: str,
        description: str = "",
        **info: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r} from {provider}")
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} from {provider}: factory must be callable")
        if name in self._entries:
            first = self._entries[name].provider
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin {provider!r}"
            )
        self._entries[name] = Entry(name, factory, provider, description, dict(info))

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def create(self, name: str, **options: Any) -> T:
        return self.entry(name).factory(**options)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif self._entries:
            hint = "known: " + ", ".join(self.names())
        else:
            hint = "no plugin registered any"
        return f"unknown {self.kind} {name!r}; {hint}"
