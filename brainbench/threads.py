"""How many CPU threads a run computes with: the cores actually free, never more.

torch (and OpenBLAS/MKL/OpenMP under numpy and scipy) start one thread per core whatever else runs. On a shared
server whose cores are busy, those threads wait on each other and the same training costs many times the CPU
it takes on an idle machine. So a run counts the cores this process may use (CPU affinity, a cgroup CPU quota),
subtracts the load other processes put on them (the 1-minute load average less this process's own share, or
the processes runnable right now, whichever is higher), and uses what is left: at least 1.

Overrides: ``BRAINBENCH_THREADS=N`` (or ``brainbench run --threads N``) uses N threads; ``default`` leaves the
libraries' own defaults alone (the behaviour before this module); ``auto`` is the default.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THREADS_ENV = "BRAINBENCH_THREADS"
AUTO, DEFAULT = "auto", "default"
#: Own CPU use is averaged over this window to tell our share of the load average from the others'.
LOAD_WINDOW_SECONDS = 60.0
_started = (time.monotonic(), time.process_time())
_samples: list[tuple[float, float]] = [_started]


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count chosen (None: libraries' defaults left alone) and why, for the run's records."""

    threads: int | None
    reason: str

    def describe(self) -> str:
        return f"{self.threads if self.threads is not None else 'library default'} ({self.reason})"


def parse_request(value: str | int | None) -> str | int:
    """"auto" | "default" | a positive int; ValueError names what is accepted."""
    if value is None or str(value).strip().lower() in ("", AUTO):
        return AUTO
    text = str(value).strip().lower()
    if text == DEFAULT:
        return DEFAULT
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"threads must be auto, default or a whole number >= 1, got {value!r}")
    return count


# ------------------------------------------------------------------------------------ what the machine has


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup quota allows (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def affinity_cores() -> int:
    """Cores this process may run on (its CPU affinity), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (runnable processes, all of the machine); 0 where unknown."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def runnable_now(samples: int = 5, gap: float = 0.01) -> float:
    """Processes of others runnable at this moment (Linux ``procs_running`` less this process's running
    threads), the median of a few looks: catches a neighbour that started too recently for the load average."""
    counts = []
    for i in range(samples):
        try:
            text = Path("/proc/stat").read_text()
        except OSError:
            return 0.0
        running = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("procs_running")), 0)
        counts.append(max(0, running - own_running_threads()))
        if i < samples - 1:
            time.sleep(gap)
    return float(statistics.median(counts))


def own_running_threads() -> int:
    """This process's threads in state R (running) right now; at least 1 (the one asking)."""
    running = 0
    try:
        for task in Path("/proc/self/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[0] == "R":
                running += 1
    except OSError:
        return 1
    return max(1, running)


def own_recent_load(now: tuple[float, float] | None = None) -> float:
    """This process's average CPU use (cores) over about the last minute, its own share of the load average."""
    wall, cpu = now or (time.monotonic(), time.process_time())
    older = [s for s in _samples if wall - s[0] >= LOAD_WINDOW_SECONDS]
    since_wall, since_cpu = older[-1] if older else _samples[0]
    _samples.append((wall, cpu))
    del _samples[:-32]
    elapsed = wall - since_wall
    return max(0.0, (cpu - since_cpu) / elapsed) if elapsed > 0 else 0.0


# ------------------------------------------------------------------------------------------- the choice


def free_cores(available: float, online: int, others_load: float) -> int:
    """Threads for ``available`` cores when other processes keep ``others_load`` cores of the machine's
    ``online`` busy: their load is spread over every core, so our share of it is ``available / online``. A
    core counts as free when under half of it is busy; at least 1, never more than ``available``."""
    capacity = max(1, math.floor(available + 1e-9))
    busy = min(1.0, max(0.0, others_load) / max(1, online))
    return max(1, min(capacity, math.floor(available * (1.0 - busy) + 0.5)))


def choose_threads(
    request: str | int | None = None,
    *,
    affinity: int | None = None,
    quota: float | None = None,
    online: int | None = None,
    load: float | None = None,
    own_load: float | None = None,
    runnable: float | None = None,
) -> ThreadChoice:
    """The threads a run should use. ``request`` (else ``BRAINBENCH_THREADS``): auto | default | N. The
    machine's figures are read when not given (tests give them)."""
    wanted = parse_request(request if request is not None else os.environ.get(THREADS_ENV))
    if wanted == DEFAULT:
        return ThreadChoice(None, f"{THREADS_ENV}=default: torch/BLAS defaults")
    if isinstance(wanted, int):
        source = THREADS_ENV if request is None else "requested"  # `brainbench run --threads` sets the variable
        return ThreadChoice(wanted, f"{source}={wanted}")
    affinity = affinity_cores() if affinity is None else affinity
    quota = cgroup_cpu_quota() if quota is None else quota
    online = (os.cpu_count() or affinity) if online is None else online
    available = min(float(affinity), quota) if quota else float(affinity)
    load = load_average() if load is None else load
    own_load = own_recent_load() if own_load is None else own_load
    runnable = runnable_now() if runnable is None else runnable
    others = max(load - own_load, runnable)
    threads = free_cores(available, online, others)
    limit = f"{affinity} cores" + (f", quota {quota:g}" if quota else "")
    return ThreadChoice(threads, f"auto: {limit}, others' load {others:.2f} of {online} online -> {threads} free")


def apply_threads(choice: ThreadChoice) -> int:
    """Set torch's intra- and inter-op threads and the BLAS/OpenMP pools of numpy and scipy to the choice;
    returns the intra-op thread count in force."""
    import torch

    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
        try:  # allowed once per process, before any inter-op work
            torch.set_num_interop_threads(choice.threads)
        except RuntimeError:
            pass
        _limit_blas(choice.threads)
    return int(torch.get_num_threads())


def _limit_blas(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)  # not as a context: the limit stays for the rest of the process


def apply_for_run() -> dict[str, Any]:
    """Choose and apply the threads for a run starting now; the record it logs (``recipe.threads...``)."""
    choice = choose_threads()
    threads = apply_threads(choice)
    return {"threads": threads, "threads_choice": choice.reason}
