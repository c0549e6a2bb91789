"""Entry point: builds the Typer app from the core commands plus every plugin's ``register_commands``.

Start-up must stay fast: nothing here imports torch, mlflow, open_clip, faiss, ray or h5py.
"""

from __future__ import annotations

import os
import sys

import typer

from brainbench import __version__
from brainbench.errors import BrainbenchError

HELP = """Train, evaluate and compare fMRI-to-image decoders.

With no data at all every command runs on the built-in simulator, e.g.
[bold]brainbench run ridge --task retrieval[/bold]. Results are logged to MLflow
(default store: sqlite:///mlflow.db in the working directory; view with [bold]brainbench ui[/bold])."""


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
    from brainbench.cli import report_cmd

    report_cmd.register(app)
    from brainbench.cli import data_cmd, log_cmd

    data_cmd.register(app)
    log_cmd.register(app)
    from brainbench.cli import ui_cmd

    ui_cmd.register(app)
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


def _debug() -> bool:
    return os.environ.get("BRAINBENCH_DEBUG", "").strip().lower() in {"1", "true", "yes"}


def _error(lines: list[str]) -> None:
    sys.stderr.write("Error: " + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user's mistake ends in one or two lines and status 2, never a traceback.

    ``BRAINBENCH_DEBUG=1`` lets every exception through with its traceback.
    """
    from brainbench.cli import usage

    args = sys.argv[1:] if argv is None else argv
    try:
        command = typer.main.get_command(build_app())
        code = command.main(args=args, prog_name="brainbench", standalone_mode=False)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        return 130
    except BrainbenchError as exc:
        if _debug():
            raise
        _error(str(exc).splitlines() or [type(exc).__name__])
        return 2
    except Exception as exc:
        if usage.is_exit(exc):
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if usage.is_abort(exc):
            sys.stderr.write("Aborted.\n")
            return 130
        if usage.is_click_exception(exc):
            if "NoArgsIsHelpError" in usage.class_names(exc):
                exc.show()  # type: ignore[attr-defined]  # the help text
                return 2
            if _debug():
                raise
            _error(usage.format_usage_error(exc, args))
            return 2 if "UsageError" in usage.class_names(exc) else int(getattr(exc, "exit_code", 1))
        if _debug():
            raise
        # Not a user's mistake: say what broke in one line and how to see where.
        sys.stderr.write(
            f"Internal error: {type(exc).__name__}: {exc}\n"
            "  rerun with BRAINBENCH_DEBUG=1 for the traceback, and please report it\n"
        )
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
