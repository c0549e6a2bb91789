"""Keep after work: every record a run sends to MLflow is also kept in its run folder, so nothing is lost when
the store goes away mid-run.

- ``JournaledRecord`` wraps a ``record.RunRecord``. Each call (params, metrics, tags, artifacts, ...) is
  written to ``mlflow-journal.jsonl`` in the run folder, marked sent or not.
- The first call the store refuses puts the run *offline*: training goes on, and no later call contacts the
  store (each try would cost its bounded retries); they are only written down. A marker file
  (``UNLOGGED``) says so; the cell's folder is then never removed without a word (brainbench/workdirs.py).
- ``brainbench log FOLDER`` replays the journal when the store is back (records/replay.py), and
  trusts nothing in it: only files inside the folder, only into the run this folder's run created (its
  ``brainbench.journal_token`` tag, written at creation and kept in the journal's header, must match), or
  into a new run of a store the user names.
- Store URIs are recorded absolute, so a journal names the same store from any working directory.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from brainbench.errors import BrainbenchError, one_line
from brainbench.records.record import Record

JOURNAL = "mlflow-journal.jsonl"
UNLOGGED = "UNLOGGED"
#: The calls a journal keeps and replays: every method of records.record.Record (arguments: JSON values or paths).
CALLS = ("log_params", "log_metrics", "set_tags", "log_artifact", "log_dict", "log_text", "log_table",
         "log_dataset")
#: ``--log-model`` while offline: the model is logged at replay, rebuilt from the run folder's checkpoint.
LOG_MODEL = "log_model"
MODEL_SPEC_FILE = "mlflow-model.json"
MODEL_EXAMPLE_FILE = "mlflow-model-example.npy"
#: A random token a journaled run carries from its creation, also written in its journal's header: the proof
#: `brainbench log` asks for before writing into an existing run.
JOURNAL_TOKEN_TAG = "brainbench.journal_token"


def new_token() -> str:
    return secrets.token_hex(16)


class StoreOfflineError(BrainbenchError):
    """A run whose records could not all reach the MLflow store; they are kept in its run folder."""


def pending(folder: Path) -> bool:
    """Whether the run folder holds records the store has not received."""
    return (folder / UNLOGGED).is_file()


def find_pending(root: Path) -> list[Path]:
    """Run folders under ``root`` (itself included) with unlogged records, oldest first."""
    if pending(root):
        return [root]
    return sorted((marker.parent for marker in root.rglob(UNLOGGED) if marker.is_file()), key=lambda p: p.name)


class JournaledRecord:
    """A RunRecord whose every call is also written to the run folder's journal (see the module doc)."""

    def __init__(self, record: Record, folder: Path, header: dict[str, Any]) -> None:
        self._record = record
        self.run_id: str = record.run_id
        self.folder = folder.resolve()  # every path the journal records is absolute
        self.offline_error: BaseException | None = None
        self._path = self.folder / JOURNAL
        self._write({"header": {**header, "run_id": self.run_id, "started": time.time()}})

    def __getattr__(self, name: str) -> Any:
        if name in CALLS:
            return lambda *args, **kwargs: self._call(name, args, kwargs)
        return getattr(self._record, name)  # anything else (read-only helpers) goes to the record itself

    @property
    def offline(self) -> bool:
        return self.offline_error is not None

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if name == "log_artifact":
            args = (str(self._keep_file(Path(args[0]))), *args[1:])
        sent = False
        if self.offline_error is None:
            try:
                getattr(self._record, name)(*args, **kwargs)
                sent = True
            except Exception as exc:  # mlflow, requests and sqlite raise many types: any of them means "offline"
                self.go_offline(exc)
        self._write({"call": name, "args": list(args), "kwargs": kwargs, "sent": sent})

    def _keep_file(self, path: Path) -> Path:
        """An artifact outside the run folder (e.g. a temporary file) is copied in, so a replay still finds it."""
        path = path.resolve()
        if path.is_relative_to(self.folder.resolve()):
            return path
        kept = self.folder / "kept-artifacts" / f"{len(list(self.folder.glob('kept-artifacts/*')))}-{path.name}"
        kept.parent.mkdir(exist_ok=True)
        shutil.copy2(path, kept)
        return kept

    def go_offline(self, exc: BaseException) -> None:
        self.offline_error = exc
        (self.folder / UNLOGGED).write_text(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: the MLflow store stopped answering: {type(exc).__name__}: "
            f"{exc}\nlog these records later with: brainbench log {self.folder}\n"
        )
        import sys

        print(
            f"brainbench: warning: the MLflow store stopped answering ({type(exc).__name__}: {one_line(exc, 160)}); "
            f"the run goes on and keeps its records in {self.folder}",
            file=sys.stderr,
            flush=True,
        )

    def defer_model(self, spec: dict[str, Any], checkpoint: Path, example: Any | None) -> None:
        """Write down an MLflow model to log at replay: what rebuilds it (``spec``, see records/model.py),
        its checkpoint, and the input example rows, kept in the run folder."""
        (self.folder / MODEL_SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        example_path = None
        if example is not None:
            import numpy as np

            example_path = self.folder / MODEL_EXAMPLE_FILE
            np.save(example_path, np.asarray(example, dtype=np.float32))
        args = [str(self._keep_file(Path(checkpoint))), str(self.folder / MODEL_SPEC_FILE),
                str(example_path) if example_path else None]
        self._write({"call": LOG_MODEL, "args": args, "kwargs": {}, "sent": False})

    def finish(self, status: str) -> None:
        """The run's end, written down (replayed as the run's final status)."""
        self._write({"end": status, "sent": not self.offline})

    def _write(self, entry: dict[str, Any]) -> None:
        with self._path.open("a") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")
            handle.flush()

    def offline_message(self, uri: str) -> str:
        return (
            f"the MLflow store {uri} stopped answering during the run ({type(self.offline_error).__name__}: "
            f"{one_line(self.offline_error, 160)}).\nNothing is lost: the model, the results and every record are kept "
            f"in {self.folder}\nLog them when the store is back:  brainbench log {self.folder}"
        )
