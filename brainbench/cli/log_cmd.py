"""``brainbench log [FOLDER ...]``: send the records a run kept in its folder, while the store was away, to MLflow."""

from __future__ import annotations

from pathlib import Path

import typer

from brainbench.errors import BrainbenchError, one_line


def register(app: typer.Typer) -> None:
    @app.command("log")
    def log(
        folders: list[Path] = typer.Argument(
            None,
            help="Run folders (or folders above them) whose records did not reach the store. Default: every such "
            "folder under $BRAINBENCH_HOME/runs.",
            show_default=False,
        ),
        tracking_uri: str | None = typer.Option(
            None, "--tracking-uri",
            help="Log into this store instead of the one the run used (its records then go into a new run).",
        ),
        experiment: str | None = typer.Option(
            None, "--experiment", help="Experiment of a new run (default: the run's own)."
        ),
    ) -> None:
        """Log the records a run kept in its folder because its MLflow store went away mid-run.

        Such a run goes on training and keeps everything (params, metrics, results, model, figures) on disk.

        The store's run gets only what it missed, then its final status; another store gets a new run.

        The journal is checked first: only the folder's own files, only into the run that folder's run created.

        A journal never creates a store or changes a closed run; a line asking for more is refused, by number.

        Each folder is logged on its own: one that fails does not stop the others (exit 2 when any failed).
        """
        from rich.console import Console

        from brainbench.paths import home_folder
        from brainbench.records.journal import JOURNAL, find_pending, pending
        from brainbench.records.replay import replay

        console = Console(stderr=True, highlight=False)
        roots = list(folders or [home_folder() / "runs"])
        for root in roots:
            if not root.exists():
                raise BrainbenchError(f"{root}: no such folder")
            if not root.is_dir():
                raise BrainbenchError(f"{root} is a file; pass a run folder (one holding {JOURNAL}) or a folder "
                                      "above run folders")
        todo: list[Path] = []
        for root in roots:
            found = find_pending(root)
            if not found and folders and (root / JOURNAL).is_file() and not pending(root):
                console.print(f"{root}: every record already reached the store; nothing to log")
            todo.extend(found)
        if not todo:
            console.print(f"no run folder with unlogged records under {', '.join(map(str, roots))}")
            return
        failed: list[Path] = []
        for folder in todo:
            try:
                done = replay(folder, tracking_uri, experiment)
            except BrainbenchError as exc:
                failed.append(folder)
                console.print(f"[red]not logged[/red] {folder}: {exc}", soft_wrap=True)
                continue
            except Exception as exc:  # the store's own errors (mlflow, sqlalchemy, requests): one line per folder
                failed.append(folder)
                console.print(f"[red]not logged[/red] {folder}: {type(exc).__name__}: {one_line(exc)}", soft_wrap=True)
                continue
            where = "a new run" if done["new_run"] else "its run"
            console.print(
                f"logged {folder}: {done['replayed']} record(s) into {where} {done['run_id']} in {done['uri']}, "
                f"now {done['status']}", soft_wrap=True,
            )
        if failed:
            raise BrainbenchError(
                f"{len(failed)} of {len(todo)} run folder(s) could not be logged (said above); "
                f"{len(todo) - len(failed)} logged"
            )
