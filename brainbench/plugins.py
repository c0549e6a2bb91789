"""Plugin discovery (entry-point group ``brainbench``) and the registries the plugins fill.

Environment:
- ``BRAINBENCH_PLUGINS=a,b``: load only these third-party plugins (by entry-point or distribution
  name); empty loads none but the built-ins.
- ``BRAINBENCH_STRICT_PLUGINS=1``: a plugin that fails to load, or that collides with another, is an error
  instead of a warning.
- ``BRAINBENCH_PLUGIN_IMPORT_TIMEOUT=SECONDS`` (default 5, 0: no limit): how long a third-party plugin's
  import, and each of its hooks, may take before it is skipped.

Broken plugins: a third-party plugin's import and hook calls run through :mod:`brainbench.guarded` (a time
limit, stdout/stderr captured, ``SystemExit`` and every other exception caught). A plugin that hangs, raises,
exits, implements an unknown hook or a hook with an argument its hookspec does not pass, or whose entry point
names brainbench's own code, is skipped with a warning naming its distribution and path, and listed by
``brainbench plugins`` as skipped; what it printed is shown in the warning, never on stdout.

Identity: a plugin is known by its entry-point name *and* the distribution that provides it (name, version,
file location). The built-ins' entry-point names and the names they register are reserved. When a
third-party distribution reuses a taken entry-point name, or registers an encoder/task/dataset/target name
another plugin already registered, the newcomer is refused with a warning naming both distributions and
their paths and the way out (``BRAINBENCH_PLUGINS=...`` or uninstalling one); every other command keeps
working. Under ``BRAINBENCH_STRICT_PLUGINS=1`` the collision is an error. A built-in is never replaced:
built-ins are loaded and register first, whatever ``sys.path`` order says.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from brainbench import guarded, hookspecs
from brainbench.errors import PluginError, one_line
from brainbench.registry import Registry
from brainbench.suggest import close_names

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
    timed_out: bool = False  # a call was abandoned: whatever it registers later is ignored
    refused_names: list[str] = field(default_factory=list)  # e.g. "command 'run'": taken names it was refused

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
    skipped: list[PluginInfo] = field(default_factory=list)  # broken (import failed, hung, bad hooks); error says why
    commands_checked: bool = False  # third-party register_commands hooks have run once (refusals recorded)
    priors: Registry[Any] = field(default_factory=lambda: Registry("prior"))  # brainbench.priors.Prior

    def registry(self, kind: str) -> Registry[Any]:
        return {"encoder": self.encoders, "target": self.targets, "task": self.tasks, "dataset": self.datasets,
                "prior": self.priors}[kind]


def _strict() -> bool:
    return os.environ.get("BRAINBENCH_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes"}


def _warn(message: str) -> None:
    # Plain stderr write: importing rich here would cost start-up time on every command. Not sys.stderr: inside
    # a plugin's guarded hook that is the buffer capturing the plugin's own output.
    guarded.cli_stderr().write(f"Warning: {message}\n")


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


def _distribution_path(ep: EntryPoint) -> str:
    """Where the distribution's metadata lives (its .dist-info folder), for plugins whose code is not theirs."""
    dist = getattr(ep, "dist", None)
    where = getattr(dist, "_path", None)  # PathDistribution keeps its folder here; no public accessor
    return str(where) if where is not None else "?"


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


def _collision(message: str, first: PluginInfo, newcomer: PluginInfo, refused: str | None = None) -> None:
    """Strict: an error. Otherwise the newcomer (or its ``refused`` name) is refused loudly and every command
    keeps working."""
    full = f"{message}. {_way_out(first, newcomer)}"
    if _strict() or newcomer.builtin:
        raise PluginError(full)  # two built-ins colliding is our bug, never a warning
    _warn(f"{full} Refused this from {newcomer.name!r}; BRAINBENCH_STRICT_PLUGINS=1 makes it an error.")
    add_problem(newcomer, message)
    if refused is not None and refused not in newcomer.refused_names:
        newcomer.refused_names.append(refused)


def add_problem(plugin: PluginInfo, message: str) -> None:
    """Record a problem on the plugin's status line once (hooks may run again in one process)."""
    if plugin.error is None:
        plugin.error = message
    elif message not in plugin.error:
        plugin.error = f"{plugin.error}; {message}"


def broken(plugin: PluginInfo, problem: str, output: str = "") -> None:
    """A third-party plugin that cannot be used: an error under strict, otherwise a warning (it is skipped)."""
    shown = f" It printed: {_excerpt(output)}" if output.strip() else ""
    stop = "" if problem.endswith((".", "?", "!")) else "."
    message = f"{plugin.identity()} {problem}{stop}{shown}"
    if _strict():
        raise PluginError(message)
    _warn(f"{message} Skipped; BRAINBENCH_STRICT_PLUGINS=1 makes this an error, and BRAINBENCH_PLUGINS=... "
          f"(the plugins you want) or pip uninstall {plugin.distribution} leaves it out.")
    add_problem(plugin, problem)


def _excerpt(output: str, limit: int = 300) -> str:
    text = output.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def describe_failure(outcome: guarded.Outcome, doing: str, timeout: float | None) -> str:
    """What went wrong in a guarded call, as the end of "plugin 'x' (...) ..."."""
    if outcome.timed_out:
        return (f"did not finish {doing} within {timeout:g} s ({guarded.TIMEOUT_ENV}=SECONDS waits longer)"
                if timeout else f"did not finish {doing}")
    exc = outcome.error
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) while {doing}"
    return f"failed while {doing}: {type(exc).__name__}: {one_line(exc)}"


def guarded_call(plugin: PluginInfo, function: Callable[[], Any], doing: str) -> guarded.Outcome:
    """Run a third-party plugin's code under the time limit with its output captured; report what went wrong.

    A PluginError raised inside (a strict-mode collision) propagates; any other failure is ``broken``.
    """
    timeout = guarded.timeout_seconds()
    outcome = guarded.call(function, timeout, name=plugin.name)
    if outcome.timed_out:
        plugin.timed_out = True
    if isinstance(outcome.error, PluginError):
        raise outcome.error
    if not outcome.ok:
        broken(plugin, describe_failure(outcome, doing, timeout), outcome.output)
    elif outcome.output.strip():
        _warn(f"{plugin.identity()} printed while {doing}: {_excerpt(outcome.output)} (hidden from brainbench's "
              "output)")
    return outcome


def _hook_problem(pm: pluggy.PluginManager, plugin: Any) -> str | None:
    """A misspelled hook, or a hook taking an argument its hookspec does not pass: what is wrong, or None."""
    members = vars(plugin).items() if inspect.ismodule(plugin) else inspect.getmembers_static(plugin)
    for attr, value in members:
        if not callable(value) or not hasattr(value, f"{GROUP}_impl"):
            continue
        if attr not in HOOK_NAMES:
            close = close_names(attr, HOOK_NAMES, cutoff=0.6)  # difflib's default: hook names are long
            hint = f"; did you mean {close[0]!r}?" if close else f"; known hooks: {', '.join(HOOK_NAMES)}"
            return f"implements unknown hook {attr!r}{hint}"
        offered = getattr(pm.hook, attr).spec.argnames
        try:
            wanted = [p.name for p in inspect.signature(value).parameters.values()
                      if p.default is inspect.Parameter.empty and p.kind in _NAMED]
        except (TypeError, ValueError):
            continue  # pluggy's own validation at register time still applies
        unknown = [name for name in wanted if name not in offered]
        if unknown:
            return (f"implements {attr}({', '.join(wanted)}), but the hook passes only "
                    f"{', '.join(offered)} (unknown argument {', '.join(map(repr, unknown))})")
    return None


_NAMED = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _call_registry_hooks(pm: pluggy.PluginManager, plugins: dict[str, PluginInfo], sets: PluginSet) -> None:
    for hook_name, kind in REGISTRY_HOOKS.items():
        registry = sets.registry(kind)
        caller = getattr(pm.hook, hook_name)
        # Registration order, built-ins first: a built-in's names are reserved whatever sys.path says.
        impls = sorted(reversed(caller.get_hookimpls()), key=lambda i: not plugins[i.plugin_name].builtin)
        for impl in impls:
            plugin = plugins[impl.plugin_name]
            if plugin.timed_out:
                continue  # an earlier call of this plugin was abandoned: it gets no more calls

            def register(
                name: str, target: Any, description: str = "", _p=plugin, _r=registry, _k=kind, **info: Any
            ) -> None:
                if _p.timed_out:
                    return  # a late call from an abandoned hook
                if isinstance(name, str) and name in _r:
                    first = plugins[_r.entry(name).provider]
                    reserved = " (a built-in's name is reserved)" if first.builtin else ""
                    _collision(
                        f"{_k} {name!r} is registered twice: by {first.identity()} and by {_p.identity()}{reserved}",
                        first,
                        _p,
                        refused=f"{_k} {name!r}",
                    )
                    return
                _r.register(name, target, provider=_p.name, description=description, **info)
                _p.provides.setdefault(_k, []).append(name)

            kwargs = {arg: register for arg in impl.argnames}
            if not plugin.builtin:
                guarded_call(plugin, lambda f=impl.function, k=kwargs: f(**k), f"running its {hook_name} hook")
                continue
            try:
                impl.function(**kwargs)
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin must not take the CLI down
                if _strict():
                    raise PluginError(f"plugin {plugin.name!r} failed in {hook_name}: {exc!r}") from exc
                _warn(f"plugin {plugin.name!r} failed in {hook_name}: {type(exc).__name__}: {exc}; skipped")
                plugin.error = f"{type(exc).__name__}: {exc}"


def _found() -> list[EntryPoint]:
    """The group's entry points, built-ins first (their names are reserved), then by name.

    importlib.metadata already keeps one copy of each distribution (the first on sys.path), so two entry
    points with one name here always come from two distributions.
    """
    return sorted(entry_points(group=GROUP), key=lambda e: (_distribution(e)[0] != BUILTIN_DISTRIBUTION, e.name))


def _top_level(module_name: str) -> str:
    return module_name.split(".", 1)[0]


def load_plugins(extra_modules: list[tuple[str, ModuleType]] | None = None) -> PluginSet:
    """Discover, import and register every plugin; fill the registries."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    sets = PluginSet(pm, {}, Registry("encoder"), Registry("target"), Registry("task"), Registry("dataset"))
    allowed = _allowed_third_party()
    found = _found()
    # brainbench's own top-level packages: a third-party entry point naming one of them would re-register (or
    # impersonate) built-in code under another name.
    own = {_top_level(BUILTIN_DISTRIBUTION)} | {
        _top_level(ep.module) for ep in found if _distribution(ep)[0] == BUILTIN_DISTRIBUTION}
    for ep in found:
        dist_name, dist_version = _distribution(ep)
        builtin = dist_name == BUILTIN_DISTRIBUTION
        if not builtin and allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        info = PluginInfo(ep.name, dist_name, dist_version, builtin, path=_module_path(ep.module))
        if ep.name in sets.plugins:
            first = sets.plugins[ep.name]
            reserved = " (a built-in's name is reserved)" if first.builtin else ""
            _collision(f"entry point {ep.name!r} in group {GROUP!r} is provided by two distributions: "
                       f"{first.identity()} and {info.identity()}{reserved}", first, info)
            sets.refused.append(info)
            continue
        if not builtin and _top_level(ep.module) in own:
            info.path = _distribution_path(ep)  # the module's own path would be brainbench's
            broken(info, f"has an entry point ({ep.name} = {ep.value}) that names brainbench's own code, not "
                         "the plugin's")
            sets.skipped.append(info)
            continue
        module = _import_builtin(ep, info) if builtin else _import_third_party(ep, info)
        if module is None:
            sets.skipped.append(info)
            continue
        info.path = _module_path(ep.module)  # now imported: the file that actually ran
        _register_module(pm, ep.name, module, info, sets)
    for name, module in extra_modules or []:
        path = getattr(module, "__file__", None) or "(in process)"
        _register_module(pm, name, module, PluginInfo(name, "(in process)", "", False, path=path), sets)
    _call_registry_hooks(pm, sets.plugins, sets)
    return sets


def _import_builtin(ep: EntryPoint, info: PluginInfo) -> Any | None:
    try:
        return ep.load()
    except Exception as exc:
        if _strict():
            raise PluginError(f"plugin {ep.name!r} ({info.distribution}) failed to import: {exc!r}") from exc
        _warn(f"plugin {ep.name!r} ({info.distribution} {info.version}) failed to import: "
              f"{type(exc).__name__}: {exc}; skipped")
        info.error = f"failed to import: {type(exc).__name__}: {one_line(exc)}"
        return None


def _import_third_party(ep: EntryPoint, info: PluginInfo) -> Any | None:
    """Import under the time limit with output captured; None (after a warning) when the plugin is broken."""
    outcome = guarded_call(info, ep.load, "importing")
    return outcome.value if outcome.ok else None


def _register_module(pm: pluggy.PluginManager, name: str, module: Any, info: PluginInfo, sets: PluginSet) -> None:
    """Register a plugin's hooks; one with a misspelled or mis-declared hook is skipped (strict: an error)."""
    problem = _hook_problem(pm, module)
    if problem is None:
        try:
            pm.register(module, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:  # already registered, or pluggy's own checks
            problem = f"cannot be registered: {one_line(exc)}"
    if problem is not None:
        if info.builtin:
            raise PluginError(f"{info.identity()} {problem}")  # our own bug: never a warning
        broken(info, problem)
        sets.skipped.append(info)
        return
    info.hooks = sorted(impl.name for impl in _hookimpls(pm, module))
    sets.plugins[name] = info


def _hookimpls(pm: pluggy.PluginManager, module: Any) -> list[Any]:
    return [caller for caller in pm.get_hookcallers(module) or []]


def builtin_modules() -> list[tuple[str, Any]]:
    """The built-in plugins (entry-point name, module), imported without touching any third-party one.

    The CLI uses this to add the built-ins' commands before deciding whether third-party ones are needed.
    """
    modules = []
    for ep in _found():
        if _distribution(ep)[0] != BUILTIN_DISTRIBUTION:
            continue
        module = _import_builtin(ep, PluginInfo(ep.name, BUILTIN_DISTRIBUTION, "", True))
        if module is not None:
            modules.append((ep.name, module))
    return modules


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
