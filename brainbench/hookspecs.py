"""The hooks a brainbench plugin may implement.

Each hook receives a ``register`` callback rather than returning a list, so the core can validate
names, reject collisions and record which plugin provided what.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("brainbench")


@hookspec
def register_encoders(register: Any) -> None:
    """Call ``register(name, "pkg.module:Class", description=...)`` for each encoder this plugin provides.

    The class (a :class:`brainbench.interfaces.Encoder`) is imported when it is built or its options read.
    """


@hookspec
def register_targets(register: Any) -> None:
    """Call ``register(name, "pkg.module:Name", description=...)`` for each target (embedding space) provided.

    It names a :class:`brainbench.interfaces.Target` subclass, imported when built or its options read.
    """


@hookspec
def register_tasks(register: Any) -> None:
    """Call ``register(name, "pkg.module:Name", description=...)`` for each evaluation task provided.

    It names a :class:`brainbench.interfaces.Task` subclass, imported when built or its options read.
    """


@hookspec
def register_datasets(register: Any) -> None:
    """Call ``register(name, "pkg.module:Name", description=...)`` for each dataset provided.

    It names a function (or class) ``f(root=None, **options)`` returning a :class:`brainbench.interfaces.Dataset`,
    its options declared with :func:`brainbench.options.declares`.
    """


@hookspec
def register_priors(register: Any) -> None:
    """Call ``register(name, "pkg.module:Name", description=...)`` for each prior (brain -> image embedding) provided.

    It names a :class:`brainbench.priors.Prior` subclass, imported when built or its options read.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``brainbench`` Typer app (``app.command()`` or ``app.add_typer()``).

    Keep heavy imports inside the command functions: this hook runs on every CLI start-up.
    """
