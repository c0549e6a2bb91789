"""File locks and atomic writes for what several brainbench processes share: stores, caches, run folders.

Locks are OS advisory locks (``filelock``: ``flock`` on POSIX), so a process that dies, even by SIGKILL,
releases its locks and leaves nothing stale to clean up. Next to each lock file, ``<lock>.owner`` says which
process holds it (pid, host, since when, what for), so that a process that has to wait can say for whom.
On a shared filesystem (NFS, Lustre) the locks work across machines where the filesystem supports ``flock``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brainbench.errors import BrainbenchError


class LockBusy(BrainbenchError):
    """Another process holds what this one needs; the message names it (pid, host)."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def home_note(target: Path, suffix: str) -> Path:
    """A lock or marker file about ``target`` (a user's file, such as an SQLite store) kept under
    ``BRAINBENCH_HOME/locks``, keyed by its absolute path: every process naming the same file finds the same
    note, and the user's folder holds only the file itself."""
    import hashlib

    from brainbench.paths import home_folder

    absolute = target.expanduser().resolve()
    key = hashlib.sha256(str(absolute).encode()).hexdigest()[:16]
    return home_folder() / "locks" / f"{absolute.name}-{key}{suffix}"


def owner_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner")


def this_process(what: str = "") -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "what": what,
        "command": " ".join(sys.argv)[:500],
    }


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner note at ``path`` (written atomically), or None when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process"
    text = f"pid {owner.get('pid')} on host {owner.get('host')} (since {owner.get('since')})"
    return f"{text}, {owner['run_id']}" if owner.get("run_id") else text


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")


def file_lock(path: Path) -> Any:
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def try_acquire(lock: Any, timeout: float = 0) -> bool:
    from filelock import Timeout

    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return False
    return True


@contextmanager
def hold(
    lock_path: Path,
    what: str,
    *,
    wait: bool = True,
    patience: float = 2.0,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the lock at ``lock_path`` for the block.

    Held by another process: with ``wait`` block until it is free (after ``patience`` seconds, say once who
    holds it); without, raise :class:`LockBusy` naming the holder.
    """
    lock = file_lock(lock_path)
    if not try_acquire(lock, patience if wait else 0):
        holder = read_owner(owner_path(lock_path))
        if not wait:
            raise LockBusy(f"{what} is in use by {describe(holder)}", holder)
        (say or _stderr)(f"waiting for {what}: in use by {describe(holder)}")
        lock.acquire()
    note = owner_path(lock_path)
    try:
        atomic_write_text(note, json.dumps(this_process(what)))
        yield
    finally:
        note.unlink(missing_ok=True)  # before the release, so the next holder's note is never removed
        lock.release()


def is_held(lock_path: Path) -> bool:
    """Whether some process (this one included, through another lock object) holds ``lock_path`` now."""
    if not lock_path.exists():
        return False
    lock = file_lock(lock_path)
    if not try_acquire(lock):
        return True
    lock.release()
    return False


#: The names ``temporary_sibling`` gives (and ``.<name>.<pid>.tmp``, the checkpoint writer's earlier form).
TEMPORARY_NAME = re.compile(r"^\..+\.\d+(-[0-9a-f]{8})?\.tmp$")


def temporary_sibling(path: Path) -> Path:
    """A name next to ``path``, unique to this process and call (same filesystem, so os.replace is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def remove_temporaries(folder: Path, recursive: bool = True) -> list[tuple[Path, int]]:
    """Remove the temporary files (``temporary_sibling``'s names) a killed process left in ``folder``; returns
    them with their sizes. Only for a folder no running process writes in: callers hold its lock."""
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        if TEMPORARY_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append((path, size))
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Readers see the old file or the whole new one, never a part."""
    temporary = temporary_sibling(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def building_directory(final: Path) -> Iterator[Path]:
    """A temporary folder next to ``final``, renamed to ``final`` when the block succeeds (removed if not).

    ``final`` must not exist, or be an empty folder; callers hold a lock so no one else builds it meanwhile.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(final)
    temporary.mkdir()
    try:
        yield temporary
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
