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


HELP_FLAGS = {"--help"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"brainbench {__version__}")
        raise typer.Exit()


def core_app() -> typer.Typer:
    """The app with brainbench's own commands only (no plugin's)."""
    from brainbench.cli import (
        compare_cmd,
        data_cmd,
        info_cmd,
        log_cmd,
        matrix_cmd,
        plugins_cmd,
        report_cmd,
        reproduce_cmd,
        run_cmd,
        simulate_cmd,
        ui_cmd,
    )

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

    for module in (plugins_cmd, run_cmd, info_cmd, matrix_cmd, compare_cmd, report_cmd, data_cmd, log_cmd,
                   simulate_cmd, ui_cmd, reproduce_cmd):
        module.register(app)
    return app


def build_app(args: list[str] | None = None) -> typer.Typer:
    """The full app: core commands, the built-in plugins' commands, then the third-party plugins' commands.

    Given the command line, third-party plugins are not loaded to build the app when it asks for a built-in
    command's help (``brainbench run --help`` never waits on a third-party import). Every other command line
    loads them, so a broken or hostile plugin is warned about on every command.
    """
    from brainbench.cli.plugin_commands import add_builtin_commands, add_third_party_commands
    from brainbench.plugins import get_plugins

    app = core_app()
    owners = add_builtin_commands(app)
    builtin_help = bool(args) and args[0] in owners and any(a in HELP_FLAGS for a in args[1:])
    if not builtin_help:
        add_third_party_commands(app, get_plugins(), owners)
    return app


def _debug() -> bool:
    return os.environ.get("BRAINBENCH_DEBUG", "").strip().lower() in {"1", "true", "yes"}


def _error(lines: list[str]) -> None:
    sys.stderr.write("Error: " + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user's mistake ends in one or two lines and status 2, never a traceback.

    ``BRAINBENCH_DEBUG=1`` lets every exception through with its traceback.
    """
    args = sys.argv[1:] if argv is None else argv
    code = _main(args)
    if argv is None:  # the console script: a plugin import that hung must not hold the exit
        from brainbench.guarded import exit_now_if_abandoned

        exit_now_if_abandoned(code)
    return code


def _main(args: list[str]) -> int:
    from brainbench.cli import usage

    if args[:1] == ["--version"]:  # answered before any plugin is imported
        typer.echo(f"brainbench {__version__}")
        return 0
    try:
        command = typer.main.get_command(build_app(args))
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
