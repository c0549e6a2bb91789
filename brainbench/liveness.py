"""Killed means closed: a run records which process owns it, and a later brainbench start closes the runs
whose process is gone (SIGKILL, a pre-empted job, a lost node) as KILLED instead of leaving them RUNNING.

A run carries ``brainbench.host``, ``brainbench.pid`` and the process start time (so a reused pid is not
mistaken for the owner). On the same host the owner is checked directly; a run of another host is closed only
when its heartbeat (``brainbench.heartbeat``, refreshed at every epoch) is older than ``STALE_SECONDS``
(``BRAINBENCH_STALE_HOURS``, default 24 h), since its process cannot be seen from here.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

HOST_TAG = "brainbench.host"
PID_TAG = "brainbench.pid"
STARTED_TAG = "brainbench.pid_started"
HEARTBEAT_TAG = "brainbench.heartbeat"
NOTE_TAG = "brainbench.killed_note"
STALE_SECONDS = float(os.environ.get("BRAINBENCH_STALE_HOURS", "24")) * 3600


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of stat; the first two (pid, comm) were split off
    except (OSError, IndexError):
        return None


def owner_tags() -> dict[str, str]:
    """Tags that name this process as a run's owner."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        STARTED_TAG: process_start(pid) or "",
        HEARTBEAT_TAG: f"{time.time():.0f}",
    }


def process_alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (when recorded)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    if started:
        now = process_start(pid)
        if now is not None and now != started:
            return False  # the pid was reused by another process
    return True


def is_orphan(tags: dict[str, str], now: float | None = None) -> bool:
    """A RUNNING run whose owner is gone: dead on this host, or silent for STALE_SECONDS elsewhere."""
    if PID_TAG not in tags:
        return False  # not started by a brainbench that records owners: leave it alone
    if tags.get(HOST_TAG) == socket.gethostname():
        return not process_alive(int(tags[PID_TAG]), tags.get(STARTED_TAG) or None)
    heartbeat = float(tags.get(HEARTBEAT_TAG) or 0)
    return ((now or time.time()) - heartbeat) > STALE_SECONDS


def close_orphaned_runs(client: Any, experiment_ids: list[str]) -> list[str]:
    """Mark every orphaned RUNNING run KILLED, with a note saying why; returns their run ids."""
    closed = []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=5000):
        tags = run.data.tags
        if not is_orphan(tags):
            continue
        client.set_tag(
            run.info.run_id,
            NOTE_TAG,
            f"process {tags.get(PID_TAG)} on {tags.get(HOST_TAG)} was gone when a later brainbench started "
            f"({time.strftime('%Y-%m-%d %H:%M:%S')}); resume the cell with --resume",
        )
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    return closed
