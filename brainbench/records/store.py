"""Where an MLflow store is, and opening it: URIs made absolute, a server checked before any training, the
first-open lock of a new SQLite file, and a client with brainbench's settings. No mlflow import at module level.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainbench.errors import TrackingError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default since 3.7, made explicit
DEFAULT_EXPERIMENT = "brainbench"
#: MLflow's HTTP defaults (7 retries, backoff factor 2, 120 s timeout) stall a run ~8 minutes when a tracking
#: server goes away; these fail within seconds (refused) or ~2 minutes (a server that hangs).
BOUNDED_HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
#: MLflow's names of hosted stores (no path in them: the same store from any directory).
SERVICE_URIS = ("databricks", "uc:")


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


def schema_version(db: Path) -> str | None:
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
    return note.get("inode") == inode and note.get("version") is not None and note["version"] == schema_version(db)


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
                note = {"inode": db.stat().st_ino, "version": schema_version(db)}
                atomic_write_text(_ready_note(db), json.dumps(note))
                return
    open_store()


def open_client(uri: str) -> Any:
    """An MlflowClient of ``uri`` with brainbench's settings: bounded HTTP retries and a ``file://`` store
    allowed (the user's own settings win)."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a file:// store is the user's choice
    for name, value in BOUNDED_HTTP_RETRIES.items():
        os.environ.setdefault(name, value)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)
