"""A run folder's journal read back and checked line by line, trusting nothing in it (``brainbench log``
sends only what passes; records/replay.py).

A journal is a file on disk, and anything that can write one could ask for anything: other files copied into
a store, a store of its choosing, another run rewritten. So every line is checked before anything is written
anywhere: known calls with the arguments they take; every file it names resolves, links followed, inside the
run folder; artifact names are relative, without ``..``; the store URI is absolute. A refused line is named
(file and line number) and nothing of the folder is logged.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from brainbench.errors import BrainbenchError
from brainbench.records.journal import CALLS, JOURNAL, JOURNAL_TOKEN_TAG, LOG_MODEL
from brainbench.records.record import RunRecord
from brainbench.records.store import is_absolute_uri

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
#: Which arguments of a call name a file in the run folder, and which an artifact inside the run.
PATH_PARAMS = {"log_artifact": ("path",), LOG_MODEL: ("checkpoint", "spec", "example")}
NAME_PARAMS = {"log_artifact": "artifact_path", "log_dict": "name", "log_text": "name", "log_table": "name"}
OPTIONAL_PARAMS = ("artifact_path", "example")
#: The types RunRecord's arguments take (by name), checked before anything is sent.
ARGUMENT_TYPES: dict[str, type] = {
    "params": dict, "metrics": dict, "tags": dict, "data": dict, "profile": dict, "step": int, "text": str,
    "name": str, "digest": str, "source": str, "context": str, "path": str, "artifact_path": str,
}


class JournalError(BrainbenchError):
    """A journal line that is refused, or a run or store it names that is not its own; nothing was written."""


@dataclass
class Call:
    line: int
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    sent: bool
    files: list[Path] = field(default_factory=list)  # the run folder's files it sends (checked inside it)


@dataclass
class Journal:
    path: Path
    folder: Path
    header: dict[str, Any]
    calls: list[Call] = field(default_factory=list)
    status: str | None = None

    @property
    def written_in(self) -> Path:
        """The folder the run wrote the journal in (this one, unless the folder was copied or moved since)."""
        return Path(self.header.get("work_dir") or self.folder)

    @property
    def moved(self) -> bool:
        return self.written_in.resolve() != self.folder

    @property
    def token(self) -> str | None:
        return (self.header.get("tags") or {}).get(JOURNAL_TOKEN_TAG)


def read_journal(folder: Path) -> Journal:
    """A run folder's journal, every line checked (see the module doc); JournalError names a refused line."""
    folder = Path(folder).resolve()
    path = folder / JOURNAL
    if path.is_symlink():
        raise JournalError(f"{path} is a link; a run's journal is a file of its own folder")
    if not path.is_file():
        raise BrainbenchError(f"{folder} holds no MLflow journal ({JOURNAL}); is it a brainbench run folder?")
    if hasattr(os, "getuid") and path.stat().st_uid != os.getuid():
        raise JournalError(f"{path} belongs to another user (uid {path.stat().st_uid}); only your own runs are logged")
    lines = path.read_text(errors="replace").splitlines()
    journal: Journal | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue

        def refuse(why: str, number: int = number) -> JournalError:
            return JournalError(f"{path}, line {number}: {why}; nothing of {folder} was logged")

        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a last line cut short by a kill: everything before it is whole
            raise refuse("not a JSON record") from None
        if not isinstance(entry, dict) or len(entry.keys() & {"header", "call", "end"}) != 1:
            raise refuse("not a journal record (one of 'header', 'call', 'end')")
        if "header" in entry:
            if journal is not None:
                raise refuse("a second header")
            journal = Journal(path, folder, _checked_header(entry["header"], folder, refuse))
        elif journal is None:
            raise refuse("a record before the header")
        elif "call" in entry:
            journal.calls.append(_checked_call(entry, folder, journal.written_in, refuse, number))
        else:
            if entry["end"] not in END_STATUSES:
                raise refuse(f"end status {entry['end']!r} is not one of {', '.join(END_STATUSES)}")
            journal.status = entry["end"]
    if journal is None:
        raise JournalError(f"{path}: no header line (run id, store, experiment); nothing of {folder} was logged")
    return journal


def _checked_header(header: Any, folder: Path, refuse: Callable[[str], JournalError]) -> dict[str, Any]:
    if not isinstance(header, dict):
        raise refuse("the header is not an object")
    uri, experiment, run_id, tags = (header.get(key) for key in ("uri", "experiment", "run_id", "tags"))
    if not isinstance(uri, str) or not is_absolute_uri(uri):
        raise refuse(f"store URI {uri!r} is not absolute (a run records its store by absolute path or server "
                     "address; a relative one would name another store in every directory)")
    if not isinstance(experiment, str) or not experiment:
        raise refuse(f"experiment {experiment!r} is not a name")
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise refuse(f"run id {run_id!r} is not an MLflow run id (32 hex digits)")
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise refuse("tags are not an object of strings")
    work_dir = header.get("work_dir")
    if work_dir is not None and (not isinstance(work_dir, str) or not Path(work_dir).is_absolute()):
        raise refuse(f"work_dir {work_dir!r} is not an absolute path")
    if header.get("name") is not None and not isinstance(header["name"], str):
        raise refuse("the run name is not a string")
    return header


def _checked_call(
    entry: dict[str, Any], folder: Path, written_in: Path, refuse: Callable[[str], JournalError], number: int
) -> Call:
    """A call line checked; the folder's files it names are given as they are now (``folder`` may be a copy of
    ``written_in``, the folder the run wrote)."""
    name, args, kwargs, sent = entry.get("call"), entry.get("args"), entry.get("kwargs", {}), entry.get("sent")
    if name not in (*CALLS, LOG_MODEL):
        raise refuse(f"unknown call {name!r}")
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(sent, bool):
        raise refuse(f"{name}: 'args' must be a list, 'kwargs' an object, 'sent' true or false")
    if name == LOG_MODEL:
        if len(args) != 3 or kwargs:
            raise refuse(f"{name} takes [checkpoint, spec, example or null]")
        arguments = dict(zip(PATH_PARAMS[LOG_MODEL], args, strict=True))
    else:
        try:
            bound = inspect.signature(getattr(RunRecord, name)).bind(None, *args, **kwargs)
        except TypeError as exc:
            raise refuse(f"{name}: {exc}") from None
        arguments = bound.arguments
    for key, value in arguments.items():
        kind = ARGUMENT_TYPES.get(key)
        if kind is not None and value is not None and not isinstance(value, kind):
            raise refuse(f"{name}: {key} is a {type(value).__name__}, not a {kind.__name__}")
    files = []
    for key in PATH_PARAMS.get(name, ()):
        if arguments.get(key) is not None or key not in OPTIONAL_PARAMS:
            arguments[key] = str(inside_folder(arguments.get(key), folder, written_in, refuse))
            files.append(Path(arguments[key]))
    if name in NAME_PARAMS:
        artifact_name(arguments.get(NAME_PARAMS[name]), refuse, optional=NAME_PARAMS[name] in OPTIONAL_PARAMS)
    if name == "set_tags" and JOURNAL_TOKEN_TAG in arguments["tags"]:
        raise refuse(f"set_tags may not change {JOURNAL_TOKEN_TAG}")
    if name == LOG_MODEL:
        args = [arguments[key] for key in PATH_PARAMS[LOG_MODEL]]
    else:
        args, kwargs = list(bound.args[1:]), dict(bound.kwargs)
    return Call(number, name, args, kwargs, sent, files)


def inside_folder(value: Any, folder: Path, written_in: Path, refuse: Callable[[str], JournalError]) -> Path:
    """``value`` as a path that is absolute and resolves (links followed) inside ``folder``; a path inside
    ``written_in`` (where the run wrote it, when ``folder`` is a copy) is taken at the same place in ``folder``."""
    if not isinstance(value, str) or not value:
        raise refuse(f"file {value!r} is not a path")
    path = Path(value)
    if not path.is_absolute():
        raise refuse(f"file {value!r} is not an absolute path (a run records the files of its folder by absolute "
                     "path)")
    if written_in != folder and ".." not in path.parts and path.is_relative_to(written_in):
        path = folder / path.relative_to(written_in)
    resolved = path.resolve()
    if not resolved.is_relative_to(folder):
        shown = value if str(resolved) == value else f"{value} (-> {resolved})"
        raise refuse(f"file {shown} is outside the run folder; only the folder's own files are logged")
    return resolved


def artifact_name(value: Any, refuse: Callable[[str], JournalError], optional: bool = False) -> None:
    """An artifact's name inside the run: relative, no ``..``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise refuse(f"artifact name {value!r} is not a name")
    parts = PurePosixPath(value.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts:
        raise refuse(f"artifact name {value!r} leaves the run's artifacts (absolute, or with '..')")
