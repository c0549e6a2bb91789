"""``brainbench log [FOLDER ...]``: send the records a run kept in its folder, while the store was away, to MLflow."""

from __future__ import annotations

from pathlib import Path

import typer

from brainbench.errors import BrainbenchError


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
        experiment: str | None = typer.Option(None, "--experiment", help="Experiment (default: the run's own)."),
    ) -> None:
        """Log the records a run kept in its folder because its MLflow store went away mid-run.

        Such a run goes on training and keeps everything (params, metrics, results, model, figures) on disk.

        The store's run gets only what it missed, then its final status; another store gets a new run.
        """
        from rich.console import Console

        from brainbench.journal import find_pending, pending, replay
        from brainbench.paths import home_folder

        console = Console(stderr=True)
        roots = list(folders or [home_folder() / "runs"])
        todo: list[Path] = []
        for root in roots:
            if not root.exists():
                raise BrainbenchError(f"{root}: no such folder")
            found = find_pending(root)
            if not found and folders and (root / "mlflow-journal.jsonl").is_file() and not pending(root):
                console.print(f"{root}: every record already reached the store; nothing to log")
            todo.extend(found)
        if not todo:
            console.print(f"no run folder with unlogged records under {', '.join(map(str, roots))}")
            return
        for folder in todo:
            done = replay(folder, tracking_uri, experiment)
            where = "a new run" if done["new_run"] else "its run"
            console.print(
                f"logged {folder}: {done['replayed']} record(s) into {where} {done['run_id']} in {done['uri']}, "
                f"now {done['status']}"
            )
