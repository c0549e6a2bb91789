"""Name -> factory registries, one per kind of plugin object."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from brainbench.errors import DuplicateNameError, PluginError, UnknownNameError
from brainbench.options import Options
from brainbench.suggest import close_names

T = TypeVar("T")


#: Arguments the core passes to a factory itself (not user options): never validated as options.
CORE_ARGUMENTS = {"dataset": {"root"}}


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    provider: str
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "plugin"

    def declared_options(self) -> Options | None:
        """The options this entry declares: ``register(..., options=Options(...) | "module:Class")``, or a
        ``declared_options`` attribute of the factory itself (a class); None when undeclared.

        A "module:Class" string is imported only here, so listing plugins stays cheap.
        """
        spec = self.info.get("options", getattr(self.factory, "declared_options", None))
        if isinstance(spec, str):
            module, _, attribute = spec.partition(":")
            try:
                target = getattr(importlib.import_module(module), attribute) if attribute else None
            except (ImportError, AttributeError) as exc:
                raise PluginError(
                    f"{self.kind} {self.name!r} (plugin {self.provider!r}) declares its options in {spec!r}, "
                    f"which cannot be loaded: {exc}"
                ) from None
            spec = getattr(target, "declared_options", target)
        if spec is not None and not isinstance(spec, Options):
            raise PluginError(
                f"{self.kind} {self.name!r} (plugin {self.provider!r}): declared options must be a "
                f"brainbench.options.Options, got {type(spec).__name__}"
            )
        return spec

    def check_options(self, options: dict[str, Any], where: str = "option ") -> dict[str, Any]:
        """``options`` coerced to the declared types (core arguments such as a dataset's root untouched)."""
        reserved = CORE_ARGUMENTS.get(self.kind, set())
        user = {k: v for k, v in options.items() if k not in reserved}
        declared = self.declared_options()
        checked = user if declared is None else declared.validate(user, self.name, where)
        return {**{k: v for k, v in options.items() if k in reserved}, **checked}


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
        self._entries[name] = Entry(name, factory, provider, description, dict(info), self.kind)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def create(self, name: str, **options: Any) -> T:
        """Build ``name`` with ``options`` validated against its declaration first."""
        entry = self.entry(name)
        return entry.factory(**entry.check_options(options))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def _unknown_message(self, name: str) -> str:
        close = close_names(name, self.names(), n=3)
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif self._entries:
            hint = "known: " + ", ".join(self.names())
        else:
            hint = "no plugin registered any"
        return f"unknown {self.kind} {name!r}; {hint}"
