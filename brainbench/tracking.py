"""MLflow records of runs. The only module that imports mlflow (lazily)."""

from __future__ import annotations

import json
import math
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brainbench.errors import TrackingError, one_line

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default since 3.7, made explicit
DEFAULT_EXPERIMENT = "brainbench"
#: MLflow's HTTP defaults (7 retries, backoff factor 2, 120 s timeout) stall a run ~8 minutes when a tracking
#: server goes away; these fail within seconds (refused) or ~2 minutes (a server that hangs).
BOUNDED_HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail before training, not after, when a tracking server cannot be reached."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status >= 400:
                    raise TrackingError(f"MLflow tracking server {uri} answered {response.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"cannot reach MLflow tracking server {uri}: {exc}. Start it (mlflow server) or pass "
                "--tracking-uri sqlite:///mlflow.db to log locally."
            ) from exc
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow store {uri}: folder {folder} does not exist")


#: MLflow's names of hosted stores (no path in them: the same store from any directory).
SERVICE_URIS = ("databricks", "uc:")


def absolute_uri(uri: str) -> str:
    """``uri`` with a local store's path made absolute (``sqlite:///mlflow.db`` -> ``sqlite:////cwd/mlflow.db``),
    so that a record of it names the same store from any working directory; other URIs as they are."""
    from urllib.parse import urlsplit

    if uri.startswith("sqlite:///"):
        path, sep, query = uri.removeprefix("sqlite:///").partition("?")
        if path in ("", ":memory:"):
            return uri
        return f"sqlite:///{Path(path).expanduser().resolve()}{sep}{query}"
    if uri.startswith(SERVICE_URIS):
        return uri
    parts = urlsplit(uri)
    if parts.scheme == "file" or (not parts.scheme and "://" not in uri):
        path = parts.path if parts.scheme == "file" else uri
        return Path(path).expanduser().resolve().as_uri()
    return uri


def is_absolute_uri(uri: str) -> bool:
    """Whether ``uri`` names one store wherever it is read: a local store by an absolute path, or a server."""
    from urllib.parse import urlsplit

    if uri.startswith("sqlite:"):
        return uri.startswith("sqlite:////")
    if uri.startswith(SERVICE_URIS):
        return True
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return parts.path.startswith("/")
    if not parts.scheme:
        return uri.startswith("/")
    return bool(parts.netloc)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless absolute)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()


def _schema_version(db: Path) -> str | None:
    """MLflow's schema revision in this SQLite file (a read-only peek, no mlflow import), None if none."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            row = con.execute("select version_num from alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _ready_note(db: Path) -> Path:
    from brainbench.locks import home_note

    return home_note(db, ".ready")  # under BRAINBENCH_HOME, not beside the user's store


def schema_ready(db: Path) -> bool:
    """Whether a brainbench process finished opening this very file (same inode, same schema revision)."""
    from brainbench.locks import read_owner

    note = read_owner(_ready_note(db)) or {}
    try:
        inode = db.stat().st_ino
    except OSError:
        return False
    return note.get("inode") == inode and note.get("version") is not None and note["version"] == _schema_version(db)


def open_sqlite_once(uri: str, open_store: Callable[[], None]) -> None:
    """Run ``open_store`` so that processes opening a new SQLite store at once do not break each other.

    MLflow creates (and migrates) the schema on first use; two processes doing it at once fail with SQLAlchemy
    errors. Until a process has opened the file once, opening is done under a lock file
    (``BRAINBENCH_HOME/locks/mlflow.db-<hash of its absolute path>.lock``): the first process makes the tables,
    the others wait. It then leaves a note there (``...ready``: the file's inode and schema revision), and later
    processes open it side by side. Nothing is written beside the store itself.
    """
    db = sqlite_path(uri)
    if db is None or str(db) in ("", ":memory:") or not db.parent.is_dir():
        open_store()
        return
    if not schema_ready(db):
        from brainbench.locks import atomic_write_text, hold, home_note

        with hold(home_note(db, ".lock"), f"MLflow store {uri}", patience=30.0):
            if not schema_ready(db):
                open_store()
                note = {"inode": db.stat().st_ino, "version": _schema_version(db)}
                atomic_write_text(_ready_note(db), json.dumps(note))
                return
    open_store()


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values become strings MLflow accepts."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


class RunRecord:
    """A started MLflow run; thin wrapper so callers never touch mlflow directly."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        tags = []
        if step is not None:  # an epoch ended: the owner is alive (see brainbench.liveness)
            from mlflow.entities import RunTag

            from brainbench.liveness import HEARTBEAT_TAG

            tags.append(RunTag(HEARTBEAT_TAG, f"{now / 1000:.0f}"))
        if items or tags:
            self._client.log_batch(self.run_id, metrics=items, tags=tags)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self._client.log_dict(self.run_id, data, name)

    def log_text(self, text: str, name: str) -> None:
        self._client.log_text(self.run_id, text, name)

    def log_table(self, data: dict[str, list[Any]], name: str) -> None:
        """A table artifact (columns -> values) the MLflow UI shows in its artifact and evaluation views."""
        self._client.log_table(self.run_id, data=data, artifact_file=name)

    def log_dataset(self, name: str, digest: str, source: str, context: str, profile: dict[str, Any]) -> None:
        """An input the run used, shown in the runs table's Dataset column (``context``: train / test)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
            profile=json.dumps(profile, default=str),
        )
        self._client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])


def run_name(encoder: str, subject: Any, seed: Any, task: str, options: dict[str, Any] | None = None) -> str:
    """What tells sibling runs apart comes first, so the UI's narrow name column shows it: ``litemind s1 seed0``
    (with the encoder options the run sets: ``ridge alpha=10000.0 s1 seed0``)."""
    settings = "".join(f" {k}={v}" for k, v in sorted((options or {}).items()))
    return f"{encoder}{settings} s{subject} seed{seed} {task}"


def code_version() -> str | None:
    """The git commit of the installed brainbench source tree, when it is a git checkout (else None)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


#: Experiment tag MLflow 3.x reads to choose its view: runs table (classic ML) instead of GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


class Tracker:
    """Creates parent (matrix) and child (cell) runs in one MLflow experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None

    def check(self) -> None:
        check_reachable(self.uri)

    @property
    def client(self) -> Any:
        if self._client is None:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a file:// store is the user's choice
            for name, value in BOUNDED_HTTP_RETRIES.items():  # the user's own settings win
                os.environ.setdefault(name, value)
            from mlflow.tracking import MlflowClient

            def open_store() -> None:
                self._client = MlflowClient(tracking_uri=self.uri)
                existing = self._client.get_experiment_by_name(self.experiment)
                if existing is None:
                    self._experiment_id = self._create_experiment()
                else:
                    self._experiment_id = existing.experiment_id

            try:
                open_sqlite_once(self.uri, open_store)
            except Exception as exc:  # mlflow raises many types; the user needs one clear line
                self._client = None
                raise TrackingError(f"cannot open MLflow store {self.uri}: {exc}") from exc
            self._close_orphans()
        return self._client

    def _close_orphans(self) -> None:
        """Killed means closed: runs left RUNNING by processes that are gone become KILLED on every start."""
        from brainbench.liveness import close_orphaned_runs

        try:
            closed = close_orphaned_runs(self._client, [self._experiment_id])
        except Exception as exc:  # never let the clean-up stop a run; say so
            print(f"brainbench: could not check for orphaned runs in {self.uri}: {exc}", file=sys.stderr)
            return
        if closed:
            print(
                f"brainbench: marked {len(closed)} run(s) KILLED whose process is gone "
                f"({', '.join(c[:8] for c in closed[:5])}{', ...' if len(closed) > 5 else ''})",
                file=sys.stderr,
            )

    def _create_experiment(self) -> str:
        try:
            # Tagged as a classic (custom model) experiment: MLflow 3 opens it on the runs table, not traces.
            # A SQLite store keeps its artifacts beside it (mlruns/ next to the .db), not in whatever folder the
            # first run happened to start in: a store given by --tracking-uri stays whole and writable.
            db = sqlite_path(self.uri)
            location = (db.expanduser().resolve().parent / "mlruns").as_uri() if db is not None else None
            return self._client.create_experiment(
                self.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except Exception:
            # Another process created it between our lookup and create.
            return self._client.get_experiment_by_name(self.experiment).experiment_id

    def check_writable(self) -> None:
        """Before any training: the home, a SQLite store's folder and a local artifact root can be written."""
        from brainbench.paths import home_folder
        from brainbench.writable import check_run_paths

        db = sqlite_path(self.uri)
        check_run_paths(home_folder(), db, None)  # the store's folder first: opening a new store creates it
        artifact_root = self.client.get_experiment(self.experiment_id).artifact_location
        check_run_paths(None, None, artifact_root)  # the home was checked just above

    @property
    def experiment_id(self) -> str:
        _ = self.client
        assert self._experiment_id is not None
        return self._experiment_id

    @contextmanager
    def run(
        self,
        name: str,
        parent_run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        keep_in: Path | None = None,
    ) -> Iterator[Any]:
        """A run marked FINISHED on success, FAILED on error, KILLED on Ctrl-C.

        With ``keep_in`` (the run's folder) every record is also kept there (brainbench.journal): a store that
        goes away mid-run loses nothing, the run goes on, and ends in a StoreOfflineError that says how to log
        the kept records (``brainbench log FOLDER``).
        """
        from brainbench.liveness import owner_tags

        client = self.client
        ours = owner_tags()
        all_tags = {"mlflow.runName": name, **ours, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if keep_in is not None:  # what `brainbench log` checks before it writes into this run (brainbench.journal)
            from brainbench.journal import JOURNAL_TOKEN_TAG, new_token

            ours[JOURNAL_TOKEN_TAG] = all_tags[JOURNAL_TOKEN_TAG] = new_token()
        if run_id is None:
            run = client.create_run(self.experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
            run_id = run.info.run_id
        else:  # an existing run taken over by this process: it is the owner now
            for key, value in ours.items():
                client.set_tag(run_id, key, value)
        record: Any = RunRecord(client, run_id)
        if keep_in is not None:
            from brainbench.journal import JournaledRecord

            header = {"uri": absolute_uri(self.uri), "experiment": self.experiment, "name": name,
                      "work_dir": str(keep_in.resolve()), "tags": {k: str(v) for k, v in all_tags.items()}}
            record = JournaledRecord(record, keep_in, header)
        try:
            yield record
        except KeyboardInterrupt:
            self._close(record, "KILLED")
            raise
        except BaseException as exc:
            self._close(record, "FAILED", f"{type(exc).__name__}: {exc}"[:5000])
            raise
        else:
            self._close(record, "FINISHED")
            if getattr(record, "offline", False):
                from brainbench.journal import StoreOfflineError

                raise StoreOfflineError(record.offline_message(self.uri))

    def _close(self, record: Any, status: str, error: str | None = None) -> None:
        """End the run in the store; a journaled run that cannot reach it keeps its end in its folder instead."""
        from brainbench.journal import JournaledRecord

        if not isinstance(record, JournaledRecord):
            try:
                if error:
                    self.client.set_tag(record.run_id, "brainbench.error", error)
                self.client.set_terminated(record.run_id, status=status)
            except Exception as exc:  # one clear line instead of a chained traceback
                raise TrackingError(
                    f"the MLflow store {self.uri} stopped answering ({type(exc).__name__}: {one_line(exc)})"
                    f"; run {record.run_id} stays RUNNING until the next brainbench start marks it KILLED. Records "
                    "kept by runs of cells are logged with `brainbench log`; then rerun the same command with "
                    "--resume" + (f" (the run failed with {error[:160]})" if error else "")
                ) from exc
            return
        if error:
            record.set_tags({"brainbench.error": error})
        if not record.offline:
            try:
                self.client.set_terminated(record.run_id, status=status)
            except Exception as exc:  # the store went away at the very end
                record.go_offline(exc)
        record.finish(status)
        if record.offline and status != "FINISHED":
            print(f"brainbench: the run's records are kept in {record.folder}; log them later with: "
                  f"brainbench log {record.folder}", file=sys.stderr)
