"""Each run's own work folder, ``$BRAINBENCH_HOME/runs/<cell key>/<run folder>``, and a cell's resume state.

- Every run writes in a folder of its own (a new name per run), so runs of one cell at the same time, in
  two terminals or a Slurm array, never remove or overwrite each other's files.
- A run holds its folder's lock while it runs; the OS releases it when the process ends, however it ends.
- Folders are chosen under the cell's lock (held for milliseconds), so two processes never choose alike:
  * ``--resume`` moves the checkpoints of the cell's latest run that is not running (an interrupted one, or
    a finished one) into its own folder: two resumers never continue from the same checkpoint. When the only
    checkpoints are those of a run still in progress it stops, naming that process (pid, host, MLflow run).
  * without ``--resume`` a run starts over: it removes the folders of the cell's runs that are not running
    (as brainbench always did with the cell's folder), never those of runs in progress. An INTERRUPTED
    training among them (checkpoints but no final model) is never removed without a word: the run stops and
    asks for ``--resume`` (continue it) or ``--restart`` (discard it and start again).
  * a run whose records never reached the MLflow store (brainbench/records/journal.py) is neither removed nor resumed
    from: the run stops and asks for ``brainbench log FOLDER`` first, or ``--restart``.
- A cell folder of the old layout (``runs/<key>/checkpoints``) is resumed from like any other.
- Temporary files that a killed write left in the cell's idle folders (``.last.pt.<pid>-<id>.tmp``) are
  removed at every start, before any checkpoint is resumed from or kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from brainbench.constants import RUN_LOCK
from brainbench.errors import BrainbenchError
from brainbench.locks import (
    LockBusy,
    atomic_write_text,
    describe,
    hold,
    is_held,
    owner_path,
    read_owner,
    remove_temporaries,
)
from brainbench.records.journal import pending

CELL_LOCK = ".cell.lock"
CHECKPOINTS = "checkpoints"
RUN_FOLDER = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")


def cell_dir(cell_key: str) -> Path:
    from brainbench.paths import home

    return home() / "runs" / cell_key


def new_folder_name() -> str:
    """Sorts by start time; unique across processes and machines."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunFolder:
    """The folder a run writes into, held (locked) by this process until the run ends."""

    path: Path
    resumed_from: Path | None = None

    def note_run_id(self, run_id: str) -> None:
        """Record the MLflow run in the owner note, so a process that finds the folder busy can name it."""
        note = owner_path(self.path / RUN_LOCK)
        owner = read_owner(note) or {}
        atomic_write_text(note, json.dumps({**owner, "run_id": f"MLflow run {run_id}"}))


def run_folders(cell: Path) -> list[Path]:
    """The cell's run folders, and the cell folder itself when it holds old-layout checkpoints."""
    if not cell.is_dir():
        return []
    folders = sorted(p for p in cell.iterdir() if p.is_dir() and RUN_FOLDER.match(p.name))
    return ([cell] if (cell / CHECKPOINTS).is_dir() else []) + folders


def is_running(folder: Path) -> bool:
    return is_held(folder / RUN_LOCK)


def latest_checkpoints(folders: list[Path]) -> Path | None:
    """The folder whose checkpoints were written last."""
    dated = [(_newest_mtime(folder / CHECKPOINTS), folder) for folder in folders if (folder / CHECKPOINTS).is_dir()]
    dated = [(mtime, folder) for mtime, folder in dated if mtime is not None]
    return max(dated)[1] if dated else None


def _newest_mtime(folder: Path) -> float | None:
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()]
    return max(times) if times else None


def interrupted(folder: Path) -> bool:
    """A training that stopped before its end: checkpoints written, the final model not."""
    checkpoints = folder / CHECKPOINTS
    return (checkpoints / "last.pt").is_file() and not (checkpoints / "model.safetensors").is_file()


class InterruptedTrainingError(BrainbenchError):
    """A fresh start would delete an interrupted training."""


class UnloggedResultsError(BrainbenchError):
    """A new run of the cell would remove (or take the checkpoints of) a run whose records never reached MLflow."""


def _remove_stale(cell: Path, folders: list[Path]) -> None:
    """Remove idle run folders (and the old layout's files in the cell folder); callers hold the cell lock."""
    for folder in folders:
        if not folder.is_dir():
            continue
        if folder == cell:  # old layout: its files, not the run folders next to them
            for entry in cell.iterdir():
                if not RUN_FOLDER.match(entry.name) and not entry.name.startswith(CELL_LOCK):
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _remove_leftovers(cell: Path, idle: list[Path], say: Callable[[str], None]) -> None:
    """Temporary files of writes cut short by a kill (a half-written ``.last.pt.<pid>.tmp`` can be as big as
    the checkpoint: ~11 GB for MindEye) go at the next start, so they are never resumed with or kept."""
    removed = []
    for folder in idle:  # folders no process runs in (callers hold the cell's lock)
        removed += remove_temporaries(folder / CHECKPOINTS) if folder == cell else remove_temporaries(folder)
    if removed:
        size = sum(size for _, size in removed)
        say(f"removed {len(removed)} temporary file(s) ({size / 2**20:.1f} MiB) left by an interrupted write in "
            f"{', '.join(sorted({str(path.parent) for path, _ in removed}))}")


@contextmanager
def claim_run_folder(
    cell_key: str, label: str, resume: bool, say: Callable[[str], None] | None = None, restart: bool = False
) -> Iterator[RunFolder]:
    """A new folder for one run of the cell, with the cell's checkpoints when resuming (see the module doc)."""
    say = say or (lambda message: None)
    cell = cell_dir(cell_key)
    with ExitStack() as stack:
        with hold(cell / CELL_LOCK, f"cell {label} ({cell_key})", say=say):
            folders = run_folders(cell)
            running = [folder for folder in folders if folder != cell and is_running(folder)]
            idle = [folder for folder in folders if folder not in running]
            _remove_leftovers(cell, idle, say)
            source = None
            unlogged = [folder for folder in idle if pending(folder)]
            if unlogged and not restart:
                raise UnloggedResultsError(
                    f"cell {label} has results that never reached the MLflow store in {unlogged[-1]}; log them "
                    f"first with `brainbench log {unlogged[-1]}`, or pass --restart to discard them"
                )
            if unlogged:
                say(f"--restart: discarding the unlogged results in {', '.join(map(str, unlogged))}")
            if resume:
                source = latest_checkpoints(idle)
                busy = latest_checkpoints(running)
                if source is None and busy is not None:
                    holder = read_owner(owner_path(busy / RUN_LOCK))
                    raise LockBusy(
                        f"cell {label}: --resume would continue from the checkpoints in {busy}, but {describe(holder)} "
                        "is training from them now; wait for it to end, or run without --resume for an "
                        "independent run",
                        holder,
                    )
            else:
                stopped = [folder for folder in idle if interrupted(folder)]
                if stopped and not restart:
                    raise InterruptedTrainingError(
                        f"cell {label} has an interrupted training in {stopped[-1] / CHECKPOINTS}; pass --resume to "
                        "continue it, or --restart to discard it and start again"
                    )
                if stopped:
                    say(f"--restart: discarding the interrupted training in {', '.join(map(str, stopped))}")
                _remove_stale(cell, [cell, *(folder for folder in idle if folder != cell)])
            path = cell / new_folder_name()
            path.mkdir(parents=True)
            stack.enter_context(hold(path / RUN_LOCK, f"run folder {path}", wait=False))
            if source is not None:
                os.replace(source / CHECKPOINTS, path / CHECKPOINTS)  # taken: no other resumer finds them
        for folder in running:
            say(
                f"note: cell {label} is also running in {describe(read_owner(owner_path(folder / RUN_LOCK)))}; "
                f"this run is independent of it and writes in {path}"
            )
        if source is not None:
            say(f"resuming cell {label} from the checkpoints of {source}")
        yield RunFolder(path, source)
