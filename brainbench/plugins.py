"""Plugin discovery (entry-point group ``brainbench``) and the registries the plugins fill.

Environment:
- ``BRAINBENCH_PLUGINS=a,b``: load only these third-party plugins (by entry-point or distribution
  name); empty loads none but the built-ins.
- ``BRAINBENCH_STRICT_PLUGINS=1``: a plugin that fails to load is an error instead of a warning.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from brainbench import hookspecs
from brainbench.errors import PluginError
from brainbench.registry import Registry

GROUP = "brainbench"
BUILTIN_DISTRIBUTION = "brainbench"
REGISTRY_HOOKS = {
    "register_encoders": "encoder",
    "register_targets": "target",
    "register_tasks": "task",
    "register_datasets": "dataset",
}
HOOK_NAMES = [*REGISTRY_HOOKS, "register_commands"]


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class PluginSet:
    manager: pluggy.PluginManager
    plugins: dict[str, PluginInfo]
    encoders: Registry[Any]
    targets: Registry[Any]
    tasks: Registry[Any]
    datasets: Registry[Any]

    def registry(self, kind: str) -> Registry[Any]:
        return {"encoder": self.encoders, "target": self.targets, "task": self.tasks, "dataset": self.datasets}[
            kind
        ]


def _strict() -> bool:
    return os.environ.get("BRAINBENCH_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes"}


def _warn(message: str) -> None:
    # Plain stderr write: importing rich here would cost start-up time on every command.
    sys.stderr.write(f"Warning: {message}\n")


def _allowed_third_party() -> set[str] | None:
    raw = os.environ.get("BRAINBENCH_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"


def _check_hook_names(module: ModuleType, plugin_name: str) -> None:
    """A misspelled hook implementation is an error at start-up, not silence."""
    for attr, value in vars(module).items():
        if not callable(value) or not hasattr(value, "brainbench_impl"):
            continue
        if attr not in HOOK_NAMES:
            close = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known hooks: {', '.join(HOOK_NAMES)}"
            raise PluginError(f"plugin {plugin_name!r} implements unknown hook {attr!r}{hint}")


def _call_registry_hooks(pm: pluggy.PluginManager, plugins: dict[str, PluginInfo], sets: PluginSet) -> None:
    for hook_name, kind in REGISTRY_HOOKS.items():
        registry = sets.registry(kind)
        caller = getattr(pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # registration order
            plugin = plugins[impl.plugin_name]

            def register(
                name: str, factory: Any, description: str = "", _p=plugin, _r=registry, _k=kind, **info: Any
            ) -> None:
                _r.register(name, factory, provider=_p.name, description=description, **info)
                _p.provides.setdefault(_k, []).append(name)

            kwargs = {arg: register for arg in impl.argnames}
            try:
                impl.function(**kwargs)
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin must not take the CLI down
                if _strict():
                    raise PluginError(f"plugin {plugin.name!r} failed in {hook_name}: {exc!r}") from exc
                _warn(f"plugin {plugin.name!r} failed in {hook_name}: {type(exc).__name__}: {exc}; skipped")
                plugin.error = f"{type(exc).__name__}: {exc}"


def load_plugins(extra_modules: list[tuple[str, ModuleType]] | None = None) -> PluginSet:
    """Discover, import and register every plugin; fill the registries."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    plugins: dict[str, PluginInfo] = {}
    allowed = _allowed_third_party()
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist_name, dist_version = _distribution(ep)
        builtin = dist_name == BUILTIN_DISTRIBUTION
        if not builtin and allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        if ep.name in plugins:
            continue  # the same distribution seen twice on sys.path
        info = PluginInfo(ep.name, dist_name, dist_version, builtin)
        try:
            module = ep.load()
        except Exception as exc:
            if _strict():
                raise PluginError(f"plugin {ep.name!r} ({dist_name}) failed to import: {exc!r}") from exc
            _warn(f"plugin {ep.name!r} ({dist_name} {dist_version}) failed to import: "
                  f"{type(exc).__name__}: {exc}; skipped")
            continue
        _register_module(pm, ep.name, module, info, plugins)
    for name, module in extra_modules or []:
        _register_module(pm, name, module, PluginInfo(name, "(in process)", "", False), plugins)
    pm.check_pending()
    sets = PluginSet(pm, plugins, Registry("encoder"), Registry("target"), Registry("task"), Registry("dataset"))
    _call_registry_hooks(pm, plugins, sets)
    return sets


def _register_module(
    pm: pluggy.PluginManager, name: str, module: Any, info: PluginInfo, plugins: dict[str, PluginInfo]
) -> None:
    if inspect.ismodule(module):
        _check_hook_names(module, name)
    pm.register(module, name=name)
    info.hooks = sorted(impl.name for impl in _hookimpls(pm, module))
    plugins[name] = info


def _hookimpls(pm: pluggy.PluginManager, module: Any) -> list[Any]:
    return [caller for caller in pm.get_hookcallers(module) or []]


@cache
def get_plugins() -> PluginSet:
    """The process-wide plugin set, loaded once."""
    return load_plugins()


def reset_plugins() -> None:
    """Forget the cached plugin set (tests and long-lived processes that install plugins)."""
    get_plugins.cache_clear()
