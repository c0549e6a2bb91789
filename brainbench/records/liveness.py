"""Killed means closed: a run records which process owns it, and a later brainbench start closes the runs
whose process is gone (SIGKILL, a pre-empted job, a lost node) as KILLED instead of leaving them RUNNING.

A run carries ``brainbench.host``, ``brainbench.pid``, the process's start time (so a reused pid is not
mistaken for the owner), the kernel's boot id and the owner's PID namespace. A pid means something only in
its own namespace on its own boot, so the owner is checked directly (psutil) only when both match this
process's; a boot id that differs on the same host means the machine restarted since, so the owner is gone.
A run of another host or another PID namespace (a container on the same host name) cannot be seen from
here: it is closed only when its heartbeat (``brainbench.heartbeat``, refreshed at every epoch) is older
than ``STALE_SECONDS`` (``BRAINBENCH_STALE_HOURS``, default 24 h).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Literal

HOST_TAG = "brainbench.host"
PID_TAG = "brainbench.pid"
STARTED_TAG = "brainbench.process_started"  # psutil's create_time, seconds since the epoch
LEGACY_STARTED_TAG = "brainbench.pid_started"  # clock ticks since boot, written by earlier versions
BOOT_TAG = "brainbench.boot_id"
PID_NAMESPACE_TAG = "brainbench.pid_namespace"
HEARTBEAT_TAG = "brainbench.heartbeat"
NOTE_TAG = "brainbench.killed_note"
STALE_SECONDS = float(os.environ.get("BRAINBENCH_STALE_HOURS", "24")) * 3600
#: create_time is boot time + start ticks; the kernel's boot time moves by up to a second with clock
#: adjustments, so two readings of one process can differ that much.
START_TOLERANCE = 1.5

OwnerState = Literal["alive", "gone", "unknown"]


def boot_id() -> str | None:
    """This boot of the kernel (Linux), or None where unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[inode]`` on Linux), or None where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None when there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def owner_tags() -> dict[str, str]:
    """Tags that name this process as a run's owner."""
    pid = os.getpid()
    started = process_start(pid)
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        STARTED_TAG: f"{started:.2f}" if started is not None else "",
        BOOT_TAG: boot_id() or "",
        PID_NAMESPACE_TAG: pid_namespace() or "",
        HEARTBEAT_TAG: f"{time.time():.0f}",
    }


def process_alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` (of this PID namespace) is still the process that started at ``started`` (when
    recorded); a zombie (ended, not yet reaped) is not alive."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        now = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; whose it is cannot be read
    if started:
        try:
            return abs(now - float(started)) <= START_TOLERANCE  # else the pid was reused by another process
        except ValueError:
            return True
    return True


def owner_state(tags: dict[str, str]) -> OwnerState:
    """Whether the process a run's tags name is alive, gone, or cannot be seen from this process."""
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return "unknown"
    recorded_boot = tags.get(BOOT_TAG)
    if recorded_boot and boot_id() and recorded_boot != boot_id():
        return "gone"  # the host restarted since the run started
    recorded_namespace = tags.get(PID_NAMESPACE_TAG)
    if recorded_namespace and recorded_namespace != pid_namespace():
        return "unknown"  # its pid names another process here, or none
    try:
        pid = int(tags[PID_TAG])
    except ValueError:
        return "unknown"
    return "alive" if process_alive(pid, tags.get(STARTED_TAG) or None) else "gone"


def is_orphan(tags: dict[str, str], now: float | None = None) -> bool:
    """A RUNNING run whose owner is gone: dead here, or silent for STALE_SECONDS where it cannot be seen."""
    if PID_TAG not in tags:
        return False  # not started by a brainbench that records owners: leave it alone
    state = owner_state(tags)
    if state != "unknown":
        return state == "gone"
    try:
        heartbeat = float(tags.get(HEARTBEAT_TAG) or 0)
    except ValueError:
        heartbeat = 0.0
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
