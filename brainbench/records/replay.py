"""``brainbench log``: replay a run folder's journal (records/journal.py) into MLflow, trusting nothing in it.

A journal is a file on disk, and anything that can write one could ask for anything: other files copied into
a store, a store of its choosing, another run rewritten. So, before anything is written anywhere:

- every line is checked (``read_journal``, records/journal_check.py): known calls with the arguments they
  take; every file it names resolves, links followed, inside the run folder; artifact names are relative,
  without ``..``; the store URI is absolute; a refused line is named (file and line number) and nothing of
  the folder is logged;
- the run it names must be the one this folder's run created: it must exist in the store with the
  ``brainbench.journal_token`` tag the journal's header holds (written at the run's creation), belong to
  this folder, and still wait for these records (RUNNING, or closed as KILLED by a later start): a closed
  run is never rewritten. The folder's lock is held meanwhile: a run still writing in it is not replayed;
- the journal's own store must exist already and be an MLflow store: a journal never creates a store. Only a
  store the user names (``--tracking-uri``) gets a new run, with every record.

A replay that fails halfway closes the run as FAILED (tag ``brainbench.replay_incomplete`` saying where it
stopped) and remembers in ``mlflow-journal.replay`` what it sent, so the next ``brainbench log`` continues
in that same run, sending each record once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainbench.errors import BrainbenchError, one_line
from brainbench.records.busy import RetryingClient
from brainbench.records.journal import JOURNAL_TOKEN_TAG, LOG_MODEL, UNLOGGED
from brainbench.records.journal_check import Call, Journal, JournalError, read_journal
from brainbench.records.liveness import (
    BOOT_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    LEGACY_STARTED_TAG,
    NOTE_TAG,
    PID_NAMESPACE_TAG,
    PID_TAG,
    STARTED_TAG,
    owner_tags,
)
from brainbench.records.query import find_run
from brainbench.records.record import RunRecord
from brainbench.records.store import absolute_uri, check_reachable, open_client, schema_version, sqlite_path
from brainbench.records.tracker import SafeTracker

PROGRESS = "mlflow-journal.replay"
REPLAY_TAG = "brainbench.replay_incomplete"
LOGGED_LATER_TAG = "brainbench.logged_later"
#: Tags a new run does not take from the journal: the owner was the process that wrote it, not the replayer.
OWNER_TAGS = (HOST_TAG, PID_TAG, STARTED_TAG, LEGACY_STARTED_TAG, BOOT_TAG, PID_NAMESPACE_TAG, HEARTBEAT_TAG)


@dataclass
class Progress:
    """What an earlier, interrupted replay of this folder sent, and where (``mlflow-journal.replay``)."""

    uri: str | None = None
    run_id: str | None = None
    lines: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, folder: Path) -> Progress:
        progress = cls()
        path = folder / PROGRESS
        if not path.is_file() or path.is_symlink():
            return progress
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short
            if isinstance(entry, dict) and isinstance(entry.get("run_id"), str):
                progress = cls(str(entry.get("uri")), entry["run_id"])
            elif isinstance(entry, dict) and isinstance(entry.get("line"), int):
                progress.lines.add(entry["line"])
        return progress

    @staticmethod
    def start(folder: Path, uri: str, run_id: str) -> None:
        (folder / PROGRESS).write_text(json.dumps({"uri": uri, "run_id": run_id}) + "\n")

    @staticmethod
    def sent(folder: Path, line: int) -> None:
        with (folder / PROGRESS).open("a") as handle:
            handle.write(json.dumps({"line": line}) + "\n")


def _store_exists(uri: str) -> str | None:
    """Why the journal's own store cannot be used (a journal never creates one), or None."""
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            return f"the store {uri} does not exist"
        if schema_version(db) is None:
            return f"{db} is not an MLflow store"
        return None
    if uri.startswith("file:") or uri.startswith("/"):
        from urllib.parse import urlsplit

        local = Path(urlsplit(uri).path if uri.startswith("file:") else uri)
        return None if local.is_dir() else f"the store {uri} does not exist"
    try:
        check_reachable(uri)
    except BrainbenchError as exc:
        return str(exc)
    return None


def _client(uri: str) -> Any:
    return RetryingClient(open_client(uri))


def why_not_its_run(run: Any, journal: Journal, uri: str) -> str | None:
    """Why ``run`` is not one this journal may write into, or None when it is (see the module doc)."""
    tags = dict(run.data.tags)
    where = f"run {run.info.run_id} in {uri}"
    if not journal.token:
        return (f"the journal's header carries no {JOURNAL_TOKEN_TAG} (an older brainbench wrote it), so {where} "
                "cannot be shown to be its run: log it into a new run of another store with --tracking-uri STORE")
    if tags.get(JOURNAL_TOKEN_TAG) != journal.token:
        return f"{where} is not the run this folder's run created (its {JOURNAL_TOKEN_TAG} tag differs)"
    work_dir = tags.get("brainbench.work_dir")
    if journal.moved or work_dir and Path(work_dir).resolve() != journal.folder:
        return (f"{where} belongs to the folder {work_dir or journal.written_in}, and this is a copy or a move "
                "of it: pass --tracking-uri STORE to log the copy into a new run")
    status = run.info.status
    if status == "RUNNING":
        return None  # its records wait here; its process no longer writes into this folder (its lock is ours)
    if status == "KILLED" and NOTE_TAG in tags or status in ("FAILED", "KILLED") and REPLAY_TAG in tags:
        return None  # closed while its records waited here, or by an interrupted replay
    return f"{where} is already {status}: a journal never changes a closed run"


@dataclass
class Target:
    client: Any
    uri: str
    run_id: str  # "" until made, when ``create``
    todo: list[Call]
    create: bool = False  # a new run, in a store the user named
    new_run: bool = False  # not the run the journal's run created (made now, or by an interrupted replay)


def _target(journal: Journal, tracking_uri: str | None, experiment: str | None) -> Target:
    """The store and run to replay into, checked; creates a run only in a store the user named."""
    own = journal.header["uri"]
    uri = absolute_uri(tracking_uri) if tracking_uri else own
    named = tracking_uri is not None
    if not named:
        problem = _store_exists(uri)
        if problem:
            raise JournalError(f"{journal.folder}: {problem}; a journal never creates a store: pass --tracking-uri "
                               "STORE to log these records into a new run of a store you choose; nothing was logged")
    client = _client(uri)
    progress = Progress.read(journal.folder)
    candidates = []
    if progress.run_id and progress.uri == uri:
        candidates.append((progress.run_id, progress.lines))
    candidates.append((journal.header["run_id"], set()))
    for run_id, done in candidates:
        run = find_run(client, run_id)
        if run is None:
            continue
        problem = why_not_its_run(run, journal, uri)
        if problem:
            raise JournalError(f"{journal.folder}: {problem}; nothing was logged")
        fresh = run_id != journal.header["run_id"]  # a new run an interrupted replay made: it gets every record
        todo = [call for call in journal.calls if (fresh or not call.sent) and call.line not in done]
        return Target(client, uri, run_id, todo, new_run=fresh)
    if not named:
        raise JournalError(
            f"{journal.folder}: the store {uri} has no run {journal.header['run_id']} (the run this folder's run "
            "created); pass --tracking-uri STORE to log these records into a new run; nothing was logged"
        )
    return Target(client, uri, "", list(journal.calls), create=True, new_run=True)


def _new_run(target: Target, journal: Journal, experiment: str | None) -> str:
    tracker = SafeTracker(target.uri, experiment or journal.header["experiment"])
    tags = {k: v for k, v in journal.header["tags"].items() if k not in OWNER_TAGS}
    parent = tags.get("mlflow.parentRunId")
    if parent and find_run(target.client, parent) is None:
        tags.pop("mlflow.parentRunId")
    tags.update(owner_tags())  # this process owns it while it replays: if it dies, the next start closes it
    run = tracker.client.create_run(tracker.experiment_id, run_name=journal.header.get("name"), tags=tags)
    return str(run.info.run_id)


# ------------------------------------------------------------------------------------------- replay


def replay(folder: Path, tracking_uri: str | None = None, experiment: str | None = None) -> dict[str, Any]:
    """Send a run folder's unsent records to its run (or, with ``tracking_uri``, to that store); returns what
    was done (run id, counts, status). Raises JournalError, having written nothing, for a journal it refuses."""
    from brainbench.constants import RUN_LOCK
    from brainbench.locks import hold

    journal = read_journal(folder)
    folder = journal.folder
    with hold(folder / RUN_LOCK, f"run folder {folder} (its run, or another brainbench log)", wait=False):
        target = _target(journal, tracking_uri, experiment)
        for call in target.todo:  # every file is there before anything is written
            for file in call.files:
                if not file.is_file():
                    raise JournalError(f"{journal.path}, line {call.line}: the file {file} the run logged is gone; "
                                       "nothing was logged")
        if target.create:
            target.run_id = _new_run(target, journal, experiment)
            Progress.start(folder, target.uri, target.run_id)  # at once: a retry continues this run
        else:
            _take_over(target)
            _keep_progress(folder, target)
        _send(journal, target)
        final = journal.status or "KILLED"  # a run that never ended (its process was killed) is closed as killed
        _close(target, final)
        (folder / UNLOGGED).unlink(missing_ok=True)
        (folder / PROGRESS).unlink(missing_ok=True)
    return {"run_id": target.run_id, "replayed": len(target.todo), "status": final, "new_run": target.new_run,
            "uri": target.uri}


def _take_over(target: Target) -> None:
    """A RUNNING run whose owner is gone is owned by this process while it replays."""
    if target.client.get_run(target.run_id).info.status == "RUNNING":
        for key, value in owner_tags().items():
            target.client.set_tag(target.run_id, key, value)


def _keep_progress(folder: Path, target: Target) -> None:
    progress = Progress.read(folder)
    if progress.run_id != target.run_id or progress.uri != target.uri:
        Progress.start(folder, target.uri, target.run_id)


def _send(journal: Journal, target: Target) -> None:
    record = RunRecord(target.client, target.run_id)
    for call in target.todo:
        try:
            if call.name == LOG_MODEL:
                from brainbench.records.model import log_deferred_model

                checkpoint, spec, example = call.args
                log_deferred_model(record, Path(checkpoint), Path(spec), Path(example) if example else None)
            else:
                getattr(record, call.name)(*call.args, **call.kwargs)
        except Exception as exc:
            closed = _close_incomplete(target, call, exc)
            raise JournalError(
                f"{journal.path}, line {call.line} ({call.name}) could not be logged: {type(exc).__name__}: "
                f"{one_line(exc, 200)}. {closed} `brainbench log {journal.folder}` again continues it, sending "
                "only what is missing"
            ) from exc
        Progress.sent(journal.folder, call.line)


def _close_incomplete(target: Target, call: Call, exc: BaseException) -> str:
    """Close the run an interrupted replay wrote into (FAILED, saying where it stopped); says what was done."""
    try:
        target.client.set_tag(target.run_id, REPLAY_TAG,
                              f"stopped at journal line {call.line} ({call.name}): {one_line(exc, 300)}")
        target.client.set_terminated(target.run_id, status="FAILED")
    except Exception:
        return (f"Run {target.run_id} could not be closed either; the next brainbench start marks it KILLED "
                "(its owner, this process, is gone by then).")
    return f"Run {target.run_id} is closed as FAILED until then."


def _close(target: Target, final: str) -> None:
    client = target.client
    tags = client.get_run(target.run_id).data.tags
    for stale in (NOTE_TAG, REPLAY_TAG):  # marked KILLED, or left incomplete, while its records waited here
        if stale in tags:
            client.delete_tag(target.run_id, stale)
    client.set_tag(target.run_id, LOGGED_LATER_TAG, time.strftime("%Y-%m-%d %H:%M:%S"))
    client.set_terminated(target.run_id, status=final)
