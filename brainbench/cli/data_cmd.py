"""``brainbench data inspect PATH``: which dataset readers accept a folder, what they found, what is wrong.

Every non-synthetic dataset in the registry is tried with ``root=PATH``. For each that opens: its
``describe()``, per subject the voxel count and per split the trials, images and repeat counts, the stored
embeddings, and every problem met while reading (all voxel rows are read unless ``--no-scan``). For each
that does not open: its error message, which says what it expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from brainbench.constants import EMBEDDING_POOLED, EMBEDDING_TOKENS

#: Rows read at a time when scanning voxels for NaN/inf.
SCAN_ROWS = 2048
EMBEDDING_KEYS = (EMBEDDING_POOLED, EMBEDDING_TOKENS)


def _message(err: BaseException) -> str:
    from brainbench.errors import BrainbenchError

    return str(err) if isinstance(err, BrainbenchError) else f"{type(err).__name__}: {err}"


#: Splits every run reads: an empty one is a problem, not a detail.
REQUIRED_SPLITS = ("train", "test")


def _scan(voxels: Any, n_rows: int) -> None:
    """Read every row; lazy views raise DataError naming file and key, arrays are checked here."""
    import numpy as np

    from brainbench.errors import DataError

    for start in range(0, n_rows, SCAN_ROWS):
        block = np.asarray(voxels[start : min(start + SCAN_ROWS, n_rows)], dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            raise DataError(f"NaN or infinite voxel values in {int(bad.sum())} rows (first: row {first})")


def _split_summary(trials: Any) -> dict[str, Any]:
    import numpy as np

    _, per_image = np.unique(trials.stimulus_ids, return_counts=True)
    repeats, images = np.unique(per_image, return_counts=True)
    return {
        "trials": trials.n_trials,
        "images": len(per_image),
        "repeats": {int(r): int(n) for r, n in zip(repeats, images, strict=True)},  # repeats -> images
        "max_stimulus_id": int(trials.stimulus_ids.max()) if trials.n_trials else None,
        "sessions": None if trials.sessions is None else len(np.unique(trials.sessions)),
    }


def _subject_summary(dataset: Any, subject: int, splits: list[str], scan: bool, problems: list[str]) -> dict:
    summary: dict[str, Any] = {"subject": subject, "voxels": None, "splits": {}}
    try:
        summary["voxels"] = dataset.n_voxels(subject)
    except Exception as err:
        problems.append(f"subject {subject}: {_message(err)}")
    for split in splits:
        try:
            trials = dataset.trials(subject, split)
            summary["splits"][split] = _split_summary(trials)
            if trials.n_trials == 0 and split in REQUIRED_SPLITS:
                problems.append(f"subject {subject}, split {split}: no trials; a run on this subject cannot start")
            if scan:
                _scan(trials.voxels, trials.n_trials)
        except Exception as err:
            problems.append(f"subject {subject}, split {split}: {_message(err)}")
    return summary


def _stored(dataset: Any, subjects: list[dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    stored: dict[str, Any] = {}
    for key in EMBEDDING_KEYS:
        try:
            array = dataset.stored_embeddings(key)
        except Exception as err:
            problems.append(f"stored embeddings {key!r}: {_message(err)}")
            continue
        stored[key] = None if array is None else list(array.shape)
        if array is None:
            continue
        for subject in subjects:
            for split, info in subject["splits"].items():
                if info["max_stimulus_id"] is not None and info["max_stimulus_id"] >= array.shape[0]:
                    problems.append(
                        f"subject {subject['subject']}, split {split}: stimulus id {info['max_stimulus_id']} "
                        f"is past the {array.shape[0]} stored {key!r} rows"
                    )
    return stored


def survey(name: str, dataset: Any, root: Path, scan: bool = True) -> dict[str, Any]:
    """What one opened dataset holds and every problem met while reading it."""
    problems: list[str] = []
    report: dict[str, Any] = {"dataset": name, "describe": {}, "splits": [], "subjects": [], "stored": {}}
    try:
        report["describe"] = dataset.describe()
        report["splits"] = dataset.splits()
        subject_ids = dataset.subjects()
    except Exception as err:
        problems.append(_message(err))
        subject_ids = []
    if not subject_ids and not problems:
        problems.append("no subjects found")
    report["subjects"] = [_subject_summary(dataset, s, report["splits"], scan, problems) for s in subject_ids]
    report["stored"] = _stored(dataset, report["subjects"], problems)
    try:
        details = dataset.file_details()  # e.g. GOD's BData keys, ROIs and DataType counts per file
    except Exception as err:
        problems.append(_message(err))
        details = None
    if details:
        report["bdata"] = details  # the JSON key the report has always used for per-file details
    report["problems"] = problems
    dataset.close()
    return report


def inspect_path(path: Path, scan: bool = True) -> dict[str, Any]:
    """Try every non-synthetic dataset reader on ``path``; report what opened and why the others did not."""
    from brainbench.plugins import get_plugins

    found, not_matching = [], []
    for entry in get_plugins().datasets:
        if entry.name.startswith("synthetic"):
            continue  # the simulator writes its own data; it does not read a user's folder
        try:
            dataset = entry.create({"root": path})
        except Exception as err:
            not_matching.append({"dataset": entry.name, "error": _message(err)})
            continue
        found.append(survey(entry.name, dataset, path, scan))
    return {"path": str(path), "found": found, "not_matching": not_matching}


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} ({v})" for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return str(value)


def _repeats(info: dict[str, Any]) -> str:
    return ", ".join(f"{n} x{r}" for r, n in sorted(info["repeats"].items(), reverse=True))


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{report['path']}[/bold]")
    if not report["found"]:
        console.print("[red]No dataset reader accepts this path.[/red]")
    for item in report["found"]:
        describe = item["describe"]
        layout = describe.get("layout", "?")
        table = Table(title=f"{item['dataset']}: layout {layout}, splits {', '.join(item['splits'])}")
        table.add_column("subject", justify="right")
        table.add_column("voxels", justify="right")
        with_sessions = any(i.get("sessions") for s in item["subjects"] for i in s["splits"].values())
        for split in item["splits"]:
            table.add_column(f"{split}: trials / images" + (" / sessions" if with_sessions else "")
                             + "\nimages x repeats")
        for subject in item["subjects"]:
            row = [str(subject["subject"]), str(subject["voxels"] or "-")]
            for split in item["splits"]:
                info = subject["splits"].get(split)
                counts = f"{info['trials']} / {info['images']}" if info else ""
                if info and with_sessions:
                    counts += f" / {info.get('sessions') or '-'}"
                row.append(f"{counts}\n{_repeats(info)}" if info else "-")
            table.add_row(*row)
        console.print(table)
        stored = ", ".join(f"{k} {v}" if v else f"{k} absent" for k, v in item["stored"].items())
        console.print(f"stored embeddings: {stored or '-'}")
        extra = {k: v for k, v in describe.items() if k not in ("layout", "subjects", "trials", "missing")}
        console.print("found: " + "; ".join(f"{k} {_shown(v)}" for k, v in extra.items()), highlight=False)
        for detail in item.get("bdata", []):  # whatever the reader reports per file (Dataset.file_details)
            console.print("; ".join(f"{k} {_shown(v)}" for k, v in detail.items()), highlight=False)
        for missing in describe.get("missing", []):  # absent parts, each with what it is for (Dataset.describe)
            console.print(f"[yellow]missing:[/yellow] {missing}", highlight=False)
        if describe.get("missing") == []:
            console.print("[green]nothing missing[/green]")
        for problem in item["problems"]:
            console.print(f"[red]problem:[/red] {problem}", highlight=False)
        if not item["problems"]:
            console.print("[green]no problems found[/green]")
    if report["not_matching"]:
        console.print("[bold]Readers that did not match:[/bold]")
        for item in report["not_matching"]:
            console.print(f"  {item['dataset']}: {item['error']}", highlight=False)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Look at data on disk.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("inspect")
    def inspect(
        path: Path = typer.Argument(..., help="A data folder or file."),
        scan: bool = typer.Option(True, "--scan/--no-scan", help="Read all voxel rows (NaN/inf check)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """What each reader finds at PATH (layout, subjects, voxels, trials, repeats) and what is wrong.

        Exits with status 2 unless some reader opened PATH without problems.
        """
        report = inspect_path(path.expanduser(), scan=scan)
        if as_json:
            typer.echo(json.dumps(report, indent=2, default=str))
        else:
            _print(report)
        if not any(not item["problems"] for item in report["found"]):
            from brainbench.errors import DataError

            # an error (exit status 2) so scripts can tell a usable folder from a broken one
            raise DataError(f"{path}: no dataset reader opened it without problems (see above)")
