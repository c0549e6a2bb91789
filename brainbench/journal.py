"""Keep after work: every record a run sends to MLflow is also kept in its run folder, so nothing is lost when
the store goes away mid-run.

- ``JournaledRecord`` wraps a ``tracking.RunRecord``. Each call (params, metrics, tags, artifacts, ...) is
  written to ``mlflow-journal.jsonl`` in the run folder, marked sent or not.
- The first call the store refuses puts the run *offline*: training goes on, and no later call contacts the
  store (each try would cost its bounded retries); they are only written down. A marker file
  (``UNLOGGED``) says so; the cell's folder is then never removed without a word (brainbench/workdirs.py).
- ``brainbench log FOLDER`` replays the journal when the store is back (``replay``): into the same run when
  the store still has it (only what was not sent), else into a new run (everything), then closes it with the
  status the run ended with.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from brainbench.errors import BrainbenchError, one_line

JOURNAL = "mlflow-journal.jsonl"
UNLOGGED = "UNLOGGED"
#: The RunRecord calls a journal keeps and replays (their arguments are all JSON values or file paths).
CALLS = ("log_params", "log_metrics", "set_tags", "log_artifact", "log_dict", "log_text", "log_table",
         "log_dataset")
#: ``--log-model`` while offline: the model is logged at replay, rebuilt from the run folder's checkpoint.
LOG_MODEL = "log_model"
MODEL_SPEC_FILE = "mlflow-model.json"
MODEL_EXAMPLE_FILE = "mlflow-model-example.npy"


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

    def __init__(self, record: Any, folder: Path, header: dict[str, Any]) -> None:
        self._record = record
        self.run_id: str = record.run_id
        self.folder = folder
        self.offline_error: BaseException | None = None
        self._path = folder / JOURNAL
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
        """Write down an MLflow model to log at replay: what rebuilds it (``spec``, see brainbench.mlflow_model),
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


# ------------------------------------------------------------------------------------------------- replay


def read_journal(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """The header, the calls and the final status (None: the run did not end) of a run folder's journal."""
    path = folder / JOURNAL
    if not path.is_file():
        raise BrainbenchError(f"{folder} holds no MLflow journal ({JOURNAL}); is it a brainbench run folder?")
    header: dict[str, Any] | None = None
    calls: list[dict[str, Any]] = []
    status: str | None = None
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a last line cut short by a kill: everything before it is whole
            raise BrainbenchError(f"{path}, line {number}: not a JSON record") from None
        if "header" in entry:
            header = entry["header"]
        elif "call" in entry:
            if entry["call"] not in (*CALLS, LOG_MODEL):
                raise BrainbenchError(f"{path}, line {number}: unknown call {entry['call']!r}")
            calls.append(entry)
        elif "end" in entry:
            status = entry["end"]
    if header is None:
        raise BrainbenchError(f"{path}: no header line (run id, store, experiment)")
    return header, calls, status


def replay(folder: Path, tracking_uri: str | None = None, experiment: str | None = None) -> dict[str, Any]:
    """Send a run folder's unsent records to the store; returns what was done (run id, counts, status)."""
    from brainbench.liveness import NOTE_TAG
    from brainbench.tracking import RunRecord
    from brainbench.tracking_query import SafeTracker, get_run

    header, calls, status = read_journal(folder)
    tracker = SafeTracker(tracking_uri or header["uri"], experiment or header["experiment"])
    tracker.check()
    existing = get_run(tracker, header["run_id"])
    client = tracker.client
    if existing is not None:
        run_id = existing.run_id
        todo = [call for call in calls if not call["sent"]]
    else:  # another store (or the run was deleted): a new run gets every record
        tags = dict(header.get("tags") or {})
        parent = tags.get("mlflow.parentRunId")
        if parent and get_run(tracker, parent) is None:
            tags.pop("mlflow.parentRunId")
        run_id = client.create_run(tracker.experiment_id, run_name=header.get("name"), tags=tags).info.run_id
        todo = calls
    record = RunRecord(client, run_id)
    for call in todo:
        args = list(call["args"])
        if call["call"] in ("log_artifact", LOG_MODEL) and not Path(args[0]).exists():
            raise BrainbenchError(f"{folder}: the artifact {args[0]} the run logged is gone; cannot replay it")
        if call["call"] == LOG_MODEL:
            from brainbench.mlflow_model import log_deferred_model

            log_deferred_model(record, Path(args[0]), Path(args[1]), Path(args[2]) if args[2] else None)
            continue
        getattr(record, call["call"])(*args, **call.get("kwargs", {}))
    final = status or "KILLED"  # a run that never ended (its process was killed) is closed as killed
    if existing is not None and existing.tags.get(NOTE_TAG):
        client.delete_tag(run_id, NOTE_TAG)  # it was marked KILLED while its records waited here
    client.set_tag(run_id, "brainbench.logged_later", time.strftime("%Y-%m-%d %H:%M:%S"))
    client.set_terminated(run_id, status=final)
    (folder / UNLOGGED).unlink(missing_ok=True)
    return {"run_id": run_id, "replayed": len(todo), "status": final, "new_run": existing is None,
            "uri": tracker.uri}
