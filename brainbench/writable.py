"""Check before work: every place a run will write is tried before any training, so a read-only folder is
one clear line at the start, not a PermissionError (or lost results) at the end."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from brainbench.errors import BrainbenchError


def check_writable(folder: Path, what: str, fix: str) -> None:
    """Create ``folder`` if needed and write (then remove) a file in it; else say what and how to fix it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".brainbench-write-check-"):
            pass
    except OSError as error:
        raise BrainbenchError(f"cannot write {what} in {folder} ({error.strerror or error}); {fix}") from None


def local_folder(uri: str | None) -> Path | None:
    """The local folder of a file path or ``file:`` URI (an artifact location); None for remote stores."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else uri))
    return None


def check_run_paths(home: Path | None, store_db: Path | None, artifact_root: str | None) -> None:
    """The brainbench home (work folders, caches), a SQLite store's folder and a local artifact root."""
    if home is not None:
        check_writable(home, "run folders and caches (BRAINBENCH_HOME)", "set BRAINBENCH_HOME to a writable folder")
    if store_db is not None:
        folder = store_db.expanduser().resolve().parent
        check_writable(folder, f"the MLflow store {store_db.name}", "pass --tracking-uri with a writable location")
        if store_db.exists() and not os.access(store_db, os.W_OK):
            raise BrainbenchError(f"the MLflow store {store_db} is read-only; pass --tracking-uri with a writable one")
    folder = local_folder(artifact_root)
    if folder is not None:
        check_writable(folder, "MLflow artifacts (the experiment's artifact root)",
                       "use another --experiment or --tracking-uri whose artifact root is writable")
