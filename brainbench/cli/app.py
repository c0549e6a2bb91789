"""Entry point: builds the Typer app from the core commands plus every plugin's ``register_commands``.

Start-up must stay fast: nothing here imports torch, mlflow, open_clip, faiss, ray or h5py.
"""

from __future__ import annotations

import sys

import click
import typer

from brainbench import __version__
from brainbench.errors import BrainbenchError

HELP = """Train, evaluate and compare fMRI-to-image decoders.

With no data at all every command runs on the built-in simulator, e.g.
[bold]brainbench run ridge --task retrieval[/bold]. Results are logged to MLflow
(default store: sqlite:///mlflow.db in the working directory; view with [bold]mlflow ui[/bold])."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"brainbench {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    from brainbench.cli import compare_cmd, info_cmd, matrix_cmd, plugins_cmd, run_cmd
    from brainbench.plugins import get_plugins

    app = typer.Typer(
        name="brainbench",
        help=HELP,
        rich_markup_mode="rich",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """Train, evaluate and compare fMRI-to-image decoders."""

    plugins_cmd.register(app)
    run_cmd.register(app)
    info_cmd.register(app)
    matrix_cmd.register(app)
    compare_cmd.register(app)
    from brainbench.cli import data_cmd

    data_cmd.register(app)
    plugin_set = get_plugins()
    _add_plugin_commands(app, plugin_set)
    return app


def _add_plugin_commands(app: typer.Typer, plugin_set: object) -> None:
    from brainbench.plugins import _strict, _warn

    manager = plugin_set.manager  # type: ignore[attr-defined]
    for impl in reversed(manager.hook.register_commands.get_hookimpls()):
        try:
            impl.function(**{arg: app for arg in impl.argnames})
        except Exception as exc:
            if _strict():
                raise
            _warn(f"plugin {impl.plugin_name!r} failed to add its commands: {type(exc).__name__}: {exc}; skipped")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        command = typer.main.get_command(build_app())
        code = command.main(args=args, prog_name="brainbench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("Aborted.\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        return 130
    except BrainbenchError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]Error:[/bold red] {exc}", highlight=False)
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
