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
    """Call ``register(name, factory, description=...)`` for each encoder this plugin provides.

    ``factory(**options)`` returns a :class:`brainbench.interfaces.Encoder`.
    """


@hookspec
def register_targets(register: Any) -> None:
    """Call ``register(name, factory, description=...)`` for each target (embedding space) provided.

    ``factory(**options)`` returns a :class:`brainbench.interfaces.Target`.
    """


@hookspec
def register_tasks(register: Any) -> None:
    """Call ``register(name, factory, description=...)`` for each evaluation task provided.

    ``factory(**options)`` returns a :class:`brainbench.interfaces.Task`.
    """


@hookspec
def register_datasets(register: Any) -> None:
    """Call ``register(name, factory, description=...)`` for each dataset provided.

    ``factory(root=None, **options)`` returns a :class:`brainbench.interfaces.Dataset`.
    """


@hookspec
def register_priors(register: Any) -> None:
    """Call ``register(name, factory, description=...)`` for each prior (brain -> image embedding) provided.

    ``factory(**options)`` returns a :class:`brainbench.priors.Prior`.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``brainbench`` Typer app (``app.command()`` or ``app.add_typer()``).

    Keep heavy imports inside the command functions: this hook runs on every CLI start-up.
    """
