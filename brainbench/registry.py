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
    """One registered name: ``target`` is "package.module:Name" (imported on first use, so listing plugins
    stays cheap) or, for third-party compatibility, a callable factory."""

    name: str
    target: str | Callable[..., T]
    provider: str
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "plugin"

    @property
    def factory(self) -> Callable[..., T]:
        """The class (or function) the registration names, imported now."""
        if callable(self.target):
            return self.target
        module, _, attribute = self.target.partition(":")
        try:
            loaded = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{self.kind} {self.name!r} (plugin {self.provider!r}) names {self.target!r}, which cannot be "
                f"loaded: {type(exc).__name__}: {exc}"
            ) from None
        if not callable(loaded):
            raise PluginError(f"{self.kind} {self.name!r} (plugin {self.provider!r}): {self.target!r} is not callable")
        return loaded

    def declared_options(self) -> Options | None:
        """The options the registered class (or opener function) declares as ``declared_options``; None:
        undeclared (its options are passed on unchecked)."""
        declared = getattr(self.factory, "declared_options", None)
        if declared is not None and not isinstance(declared, Options):
            raise PluginError(
                f"{self.kind} {self.name!r} (plugin {self.provider!r}): declared options must be a "
                f"brainbench.options.Options, got {type(declared).__name__}"
            )
        return declared

    def check_options(self, options: dict[str, Any], where: str = "option ") -> dict[str, Any]:
        """``options`` coerced to the declared types (core arguments such as a dataset's root untouched);
        only those given come back. What preflight reports before anything is built."""
        core, user = self._split(options)
        declared = self.declared_options()
        return {**core, **(user if declared is None else declared.validate(user, self.name, where))}

    def create(self, options: dict[str, Any], where: str = "option ") -> T:
        """Build the plugin: ``options`` parsed once against its declaration. A plugin class (a
        brainbench.interfaces.Configurable) gets them typed as ``options=``; an opener function gets the
        same parsed values as keywords; an undeclared factory gets them as given, unchecked."""
        from brainbench.interfaces import Configurable

        core, user = self._split(options)
        core = {**dict.fromkeys(CORE_ARGUMENTS.get(self.kind, ())), **core}  # e.g. a dataset's root: None if not given
        declared = self.declared_options()
        factory = self.factory
        if declared is None:
            return factory(**core, **user)
        parsed = declared.parse(user, self.name, where)
        if isinstance(factory, type) and issubclass(factory, Configurable):
            return factory(**core, options=parsed)
        return factory(**core, **parsed.as_dict())

    def _split(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        reserved = CORE_ARGUMENTS.get(self.kind, set())
        return ({k: v for k, v in options.items() if k in reserved},
                {k: v for k, v in options.items() if k not in reserved})


class Registry(Generic[T]):
    """Maps a name to a factory; objects are built on demand so listing stays cheap."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        target: str | Callable[..., T],
        *,
        provider: str,
        description: str = "",
        **info: Any,
    ) -> None:
        """``register("knn", "brainbench_knn.encoder:KnnEncoder", description=...)``: the class (or opener
        function) is imported only when it is built or its options are read. A callable is accepted too
        (older third-party plugins); it gets the options as keywords."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r} from {provider}")
        if isinstance(target, str):
            if not _is_import_path(target):
                raise TypeError(f"{self.kind} {name!r} from {provider}: expected \"package.module:Name\" or a "
                                f"callable, got {target!r}")
        elif not callable(target):
            raise TypeError(f"{self.kind} {name!r} from {provider}: factory must be callable")
        if name in self._entries:
            first = self._entries[name].provider
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin {provider!r}"
            )
        self._entries[name] = Entry(name, target, provider, description, dict(info), self.kind)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def create(self, name: str, **options: Any) -> T:
        """Build ``name`` with ``options`` parsed against its declaration (see :meth:`Entry.create`)."""
        return self.entry(name).create(options)

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


def _is_import_path(text: str) -> bool:
    module, sep, attribute = text.partition(":")
    return bool(sep) and all(part.isidentifier() for part in module.split(".")) and attribute.isidentifier()
