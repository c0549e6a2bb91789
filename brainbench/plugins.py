"""Plugin discovery (entry-point group ``brainbench``) and the registries the plugins fill.

Environment:
- ``BRAINBENCH_PLUGINS=a,b``: load only these third-party plugins (by entry-point or distribution
  name); empty loads none but the built-ins.
- ``BRAINBENCH_STRICT_PLUGINS=1``: a plugin that fails to load, or that collides with another, is an error
  instead of a warning.

Identity: a plugin is known by its entry-point name *and* the distribution that provides it (name, version,
file location). The built-ins' entry-point names and the names they register are reserved. When a
third-party distribution reuses a taken entry-point name, or registers an encoder/task/dataset/target name
another plugin already registered, the newcomer is refused with a warning naming both distributions and
their paths and the way out (``BRAINBENCH_PLUGINS=...`` or uninstalling one); every other command keeps
working. Under ``BRAINBENCH_STRICT_PLUGINS=1`` the collision is an error. A built-in is never replaced:
built-ins are loaded and register first, whatever ``sys.path`` order says.
"""

from __future__ import annotations

import difflib
import importlib.util
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
    "register_priors": "prior",
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
    path: str = "?"  # where the plugin's code lives (module file or package folder)

    def identity(self) -> str:
        """``plugin 'x' (distribution d 1.0 at /path)``: enough to tell two same-named plugins apart."""
        return f"plugin {self.name!r} (distribution {self.distribution} {self.version} at {self.path})"


@dataclass
class PluginSet:
    manager: pluggy.PluginManager
    plugins: dict[str, PluginInfo]
    encoders: Registry[Any]
    targets: Registry[Any]
    tasks: Registry[Any]
    datasets: Registry[Any]
    refused: list[PluginInfo] = field(default_factory=list)  # collided with a taken name; error says why
    priors: Registry[Any] = field(default_factory=lambda: Registry("prior"))  # brainbench.priors.Prior

    def registry(self, kind: str) -> Registry[Any]:
        return {"encoder": self.encoders, "target": self.targets, "task": self.tasks, "dataset": self.datasets,
                "prior": self.priors}[kind]


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


def _module_path(module_name: str) -> str:
    """The file (or package folder) a module comes from, found without running it when not yet imported."""
    module = sys.modules.get(module_name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
    if not origin:
        return "?"
    if origin.endswith("__init__.py"):
        return os.path.dirname(origin)
    return origin


def _way_out(first: PluginInfo, newcomer: PluginInfo) -> str:
    uninstall = f"pip uninstall {newcomer.distribution}" if first.builtin else (
        f"pip uninstall {first.distribution} or pip uninstall {newcomer.distribution}")
    if first.builtin:
        choose = (f"load only the third-party plugins you name, leaving out {newcomer.distribution}: "
                  "BRAINBENCH_PLUGINS=name1,name2 (BRAINBENCH_PLUGINS= loads the built-ins only)")
    else:
        choose = (f"choose one: BRAINBENCH_PLUGINS={first.distribution} or BRAINBENCH_PLUGINS={newcomer.distribution} "
                  "(add the other third-party plugins you want, comma-separated)")
    return f"Way out: uninstall one ({uninstall}), or {choose}."


def _collision(message: str, first: PluginInfo, newcomer: PluginInfo) -> None:
    """Strict: an error. Otherwise the newcomer is refused loudly and every command keeps working."""
    full = f"{message}. {_way_out(first, newcomer)}"
    if _strict() or newcomer.builtin:
        raise PluginError(full)  # two built-ins colliding is our bug, never a warning
    _warn(f"{full} Refused this from {newcomer.name!r}; BRAINBENCH_STRICT_PLUGINS=1 makes it an error.")
    newcomer.error = message if newcomer.error is None else f"{newcomer.error}; {message}"


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
        # Registration order, built-ins first: a built-in's names are reserved whatever sys.path says.
        impls = sorted(reversed(caller.get_hookimpls()), key=lambda i: not plugins[i.plugin_name].builtin)
        for impl in impls:
            plugin = plugins[impl.plugin_name]

            def register(
                name: str, factory: Any, description: str = "", _p=plugin, _r=registry, _k=kind, **info: Any
            ) -> None:
                if isinstance(name, str) and name in _r:
                    first = plugins[_r.entry(name).provider]
                    reserved = " (a built-in's name is reserved)" if first.builtin else ""
                    _collision(
                        f"{_k} {name!r} is registered twice: by {first.identity()} and by {_p.identity()}{reserved}",
                        first,
                        _p,
                    )
                    return
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
    refused: list[PluginInfo] = []
    allowed = _allowed_third_party()
    # importlib.metadata already keeps one copy of each distribution (the first on sys.path), so two entry
    # points with one name here always come from two distributions. Built-ins first: their names are reserved.
    found = sorted(entry_points(group=GROUP), key=lambda e: (_distribution(e)[0] != BUILTIN_DISTRIBUTION, e.name))
    for ep in found:
        dist_name, dist_version = _distribution(ep)
        builtin = dist_name == BUILTIN_DISTRIBUTION
        if not builtin and allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        info = PluginInfo(ep.name, dist_name, dist_version, builtin, path=_module_path(ep.module))
        if ep.name in plugins:
            first = plugins[ep.name]
            reserved = " (a built-in's name is reserved)" if first.builtin else ""
            _collision(f"entry point {ep.name!r} in group {GROUP!r} is provided by two distributions: "
                       f"{first.identity()} and {info.identity()}{reserved}", first, info)
            refused.append(info)
            continue
        try:
            module = ep.load()
        except Exception as exc:
            if _strict():
                raise PluginError(f"plugin {ep.name!r} ({dist_name}) failed to import: {exc!r}") from exc
            _warn(f"plugin {ep.name!r} ({dist_name} {dist_version}) failed to import: "
                  f"{type(exc).__name__}: {exc}; skipped")
            continue
        info.path = _module_path(ep.module)  # now imported: the file that actually ran
        _register_module(pm, ep.name, module, info, plugins)
    for name, module in extra_modules or []:
        path = getattr(module, "__file__", None) or "(in process)"
        _register_module(pm, name, module, PluginInfo(name, "(in process)", "", False, path=path), plugins)
    pm.check_pending()
    sets = PluginSet(
        pm, plugins, Registry("encoder"), Registry("target"), Registry("task"), Registry("dataset"), refused
    )
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


def used_plugin_tags(plugin_set: PluginSet, used: dict[str, str]) -> dict[str, str]:
    """MLflow tags naming the distribution (name, version, path) behind each object a run used.

    ``used`` maps a kind to the registered name the run used, e.g. ``{"encoder": "ridge", "task": ...}``.
    """
    tags: dict[str, str] = {}
    for kind, name in used.items():
        registry = plugin_set.registry(kind)
        if name not in registry:
            continue
        info = plugin_set.plugins.get(registry.entry(name).provider)
        if info is None:
            continue
        tags[f"brainbench.{kind}.plugin"] = info.name
        prefix = f"brainbench.plugin.{info.name}"
        tags[f"{prefix}.distribution"] = info.distribution
        tags[f"{prefix}.version"] = str(info.version)
        tags[f"{prefix}.path"] = info.path
    return tags
