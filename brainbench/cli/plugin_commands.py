"""Plugin commands: the built-ins' first, then third-party ones, which may not take or change a built-in's.

The names the app has once the core and the built-in plugins have added their commands (run, matrix, compare,
report, info, list, plugins, data, log, index, targets, ...) are reserved, computed from the app itself so the
set cannot drift. A third-party ``register_commands`` hook runs under the plugin time limit with its output
captured (:mod:`brainbench.guarded`); what it added is then checked: a command or group named like a
built-in (or like another plugin's) is refused with a warning naming both distributions and paths (an error
under ``BRAINBENCH_STRICT_PLUGINS=1``), a command that cannot be built is refused, and a hook that altered a
built-in command group (added to ``index``, replaced ``run``'s callback) has everything it did undone.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import typer
from typer.main import get_command_name, solve_typer_info_defaults

from brainbench import __version__
from brainbench.plugins import (
    GROUP,
    PluginInfo,
    PluginSet,
    _collision,
    _strict,
    _warn,
    broken,
    builtin_modules,
    guarded_call,
)

CORE = PluginInfo("brainbench", "brainbench", __version__, True, path=os.path.dirname(os.path.abspath(__file__)))


def entry_names(commands: list[Any], groups: list[Any]) -> list[str]:
    """The command names these Typer entries give, as Typer names them (a group without a name merges its own)."""
    names = [info.name or get_command_name(info.callback.__name__) for info in commands if info.callback]
    for group in groups:
        name = solve_typer_info_defaults(group).name
        if name:
            names.append(name)
        elif group.typer_instance is not None:
            names += entry_names(group.typer_instance.registered_commands, group.typer_instance.registered_groups)
    return names


def command_names(app: typer.Typer) -> list[str]:
    return entry_names(app.registered_commands, app.registered_groups)


def add_builtin_commands(app: typer.Typer) -> dict[str, PluginInfo]:
    """Run the built-in plugins' ``register_commands``; returns the owner of every top-level name after them."""
    owners = {name: CORE for name in command_names(app)}
    for plugin_name, module in builtin_modules():
        hook = getattr(module, "register_commands", None)
        if hook is None or not hasattr(hook, f"{GROUP}_impl"):
            continue
        try:
            hook(**{arg: app for arg in inspect.signature(hook).parameters})
        except Exception as exc:
            if _strict():
                raise
            _warn(f"plugin {plugin_name!r} failed to add its commands: {type(exc).__name__}: {exc}; skipped")
        owner = PluginInfo(plugin_name, "brainbench", __version__, True, path=os.path.dirname(module.__file__))
        for name in command_names(app):
            owners.setdefault(name, owner)
    return owners


@dataclass
class _Snapshot:
    """Every Typer app reachable from the root: its entries (and what each points at) and its callback."""

    apps: list[tuple[typer.Typer, list[Any], list[Any], Any, list[Any]]]

    @classmethod
    def take(cls, root: typer.Typer) -> _Snapshot:
        apps: list[tuple[typer.Typer, list[Any], list[Any], Any, list[Any]]] = []
        seen: set[int] = set()
        pending = [root]
        while pending:
            app = pending.pop()
            if id(app) in seen:
                continue
            seen.add(id(app))
            apps.append((app, list(app.registered_commands), list(app.registered_groups), app.registered_callback,
                         _fingerprint(app)))
            pending += [g.typer_instance for g in app.registered_groups if g.typer_instance is not None]
        return cls(apps)

    def altered(self) -> bool:
        """Whether anything that existed was changed; the root app may only have gained entries at its end."""
        for index, (app, commands, groups, callback, fingerprint) in enumerate(self.apps):
            if index > 0 and (len(app.registered_commands), len(app.registered_groups)) != (
                    len(commands), len(groups)):
                return True
            now = _fingerprint(app, len(commands), len(groups))
            if app.registered_callback is not callback or not _same(now, fingerprint):
                return True
        return False

    def restore(self) -> None:
        for app, commands, groups, callback, fingerprint in self.apps:
            app.registered_commands[:] = commands
            app.registered_groups[:] = groups
            app.registered_callback = callback
            for entry, attributes in fingerprint:
                vars(entry).clear()
                vars(entry).update(attributes)

    def added(self) -> tuple[list[Any], list[Any]]:
        app, commands, groups, _, _ = self.apps[0]
        return app.registered_commands[len(commands):], app.registered_groups[len(groups):]


def _fingerprint(app: typer.Typer, commands: int | None = None, groups: int | None = None) -> list[Any]:
    """Each existing entry's attributes (a hook could swap a built-in's callback in place)."""
    return [(entry, dict(vars(entry))) for entry in [*app.registered_commands[:commands],
                                                     *app.registered_groups[:groups]]]


def _same(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    return all(x is y and xs.keys() == ys.keys() and all(xs[k] is ys[k] for k in xs)
               for (x, xs), (y, ys) in zip(a, b, strict=True))


def add_third_party_commands(app: typer.Typer, plugin_set: PluginSet, owners: dict[str, PluginInfo]) -> None:
    """Run each third-party ``register_commands`` hook and keep only what it may add (see the module notes)."""
    impls = {impl.plugin_name: impl for impl in plugin_set.manager.hook.register_commands.get_hookimpls()}
    taken = dict(owners)
    for name, plugin in plugin_set.plugins.items():
        impl = impls.get(name)
        if plugin.builtin or impl is None or plugin.timed_out:
            continue
        before = _Snapshot.take(app)
        outcome = guarded_call(plugin, lambda f=impl.function, a=impl.argnames: f(**{arg: app for arg in a}),
                               "adding its commands")
        if not outcome.ok:
            before.restore()
            continue
        if before.altered():
            before.restore()
            broken(plugin, "changed brainbench's own commands while adding its own; none of its commands were "
                           "added")
            continue
        commands, groups = before.added()
        before.restore()
        for entry, kind in [*((c, "command") for c in commands), *((g, "group") for g in groups)]:
            _add_checked(app, entry, kind, plugin, taken)
    plugin_set.commands_checked = True


def _add_checked(app: typer.Typer, entry: Any, kind: str, plugin: PluginInfo, taken: dict[str, PluginInfo]) -> None:
    probe = typer.Typer()
    (probe.registered_commands if kind == "command" else probe.registered_groups).append(entry)
    try:
        names = list(typer.main.get_group(probe).commands)  # Typer's own naming, and proof that it builds
    except Exception as exc:
        broken(plugin, f"adds a {kind} that cannot be built ({type(exc).__name__}: {exc}); it was left out")
        return
    for name in names:
        if name in taken:
            first = taken[name]
            reserved = " (a built-in command's name is reserved)" if first.builtin else ""
            _collision(f"command {name!r} is registered twice: by {first.identity()} and by {plugin.identity()}"
                       f"{reserved}", first, plugin, refused=f"command {name!r}")
            return
    (app.registered_commands if kind == "command" else app.registered_groups).append(entry)
    for name in names:
        taken[name] = plugin
        provided = plugin.provides.setdefault("command", [])
        if name not in provided:
            provided.append(name)


def check_plugin_commands(plugin_set: PluginSet) -> None:
    """Run the third-party command hooks once against a scratch app, to record what they would be refused.

    ``brainbench plugins`` needs this: a built-in command's name on the command line means the CLI did not run
    the third-party command hooks at all.
    """
    if plugin_set.commands_checked:
        return
    from brainbench.cli.app import core_app

    app = core_app()
    owners = add_builtin_commands(app)
    for name, owner in owners.items():
        if owner is not CORE and owner.name in plugin_set.plugins:
            provided = plugin_set.plugins[owner.name].provides.setdefault("command", [])
            if name not in provided:
                provided.append(name)
    add_third_party_commands(app, plugin_set, owners)
