"""Local parallel launcher: one worker process per visible GPU (CUDA_VISIBLE_DEVICES), each taking cells
from a shared queue. Without GPUs it runs ``workers`` CPU processes (handy for testing concurrency)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from brainbench.launch.jobs import CellJob, CellOutcome, execute_job


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without importing torch: CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [part.strip() for part in declared.split(",") if part.strip() and part.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def worker_slots(workers: int | None) -> list[str | None]:
    """One slot per GPU (``workers`` caps how many); CPU slots (None) when there is no GPU."""
    gpus = visible_gpus()
    if gpus:
        return list(gpus[: workers or len(gpus)])
    return [None] * max(1, workers or 1)


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), so a killed driver leaves no
    worker training on; elsewhere the worker loop checks its parent before each cell."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _worker_loop(
    slot: str | None, threads: int | None, tasks: Any, results: Any, parent_pid: int | None = None
) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    # Set before anything imports torch in this fresh (spawned) process.
    if slot is None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
        os.environ["BRAINBENCH_THREADS"] = str(threads)  # what the cell applies (brainbench/threads.py)
    name = f"gpu{slot}" if slot is not None else f"cpu-worker-{os.getpid()}"
    try:
        while True:
            item = tasks.get()
            if item is None:
                return
            if parent_pid is not None and os.getppid() != parent_pid:
                return  # the driver is gone: start no new cell
            index, job = item
            results.put(("start", index, os.getpid()))
            results.put(("done", index, execute_job(job, worker=name)))
    except KeyboardInterrupt:
        return  # the driver got Ctrl-C too; Tracker.run has already marked the cell KILLED


def worker_threads(n_workers: int) -> int | None:
    """Each worker's share of the free cores when threads are chosen automatically (workers started together
    would each see the same idle cores); None leaves an explicit BRAINBENCH_THREADS to every worker."""
    from brainbench.threads import choose_threads, parse_request

    if parse_request(os.environ.get("BRAINBENCH_THREADS")) != "auto":
        return None
    free = choose_threads().threads or 1
    return max(1, free // max(1, n_workers))


def run_local_gpus(
    jobs: list[CellJob],
    on_done: Callable[[CellOutcome], None],
    workers: int | None = None,
    threads_per_worker: int | None = None,
) -> list[CellOutcome]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fresh interpreters: no CUDA state inherited by fork
    slots = worker_slots(workers)[: max(1, len(jobs))]
    if threads_per_worker is None:
        threads_per_worker = worker_threads(len(slots))
    tasks = context.Queue()
    results = context.Queue()
    for index, job in enumerate(jobs):
        tasks.put((index, job))
    for _ in slots:
        tasks.put(None)
    processes = [
        context.Process(
            target=_worker_loop, args=(slot, threads_per_worker, tasks, results, os.getpid()), daemon=True
        )
        for slot in slots
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, CellOutcome] = {}
    running: dict[int, int] = {}  # pid -> job index
    try:
        while len(outcomes) < len(jobs):
            try:
                kind, index, payload = results.get(timeout=1.0)
            except queue.Empty:
                _collect_dead_workers(processes, running, jobs, outcomes, on_done)
                if not any(p.is_alive() for p in processes) and results.empty():
                    for index, job in enumerate(jobs):
                        if index not in outcomes:
                            outcomes[index] = _lost(job, "no worker process left to run it")
                            on_done(outcomes[index])
                continue
            if kind == "start":
                running[payload] = index
            else:
                running = {pid: i for pid, i in running.items() if i != index}
                outcomes[index] = payload
                on_done(payload)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    return [outcomes[index] for index in range(len(jobs))]


def _lost(job: CellJob, why: str) -> CellOutcome:
    from brainbench.config import RunConfig

    config = RunConfig.from_dict(job.config)
    return CellOutcome(config.key, config.label(), "FAILED", error=why)


def _collect_dead_workers(
    processes: list[Any],
    running: dict[int, int],
    jobs: list[CellJob],
    outcomes: dict[int, CellOutcome],
    on_done: Callable[[CellOutcome], None],
) -> None:
    """A worker that died mid-cell (killed, out of memory) fails that cell instead of hanging the driver."""
    for process in processes:
        if process.is_alive() or process.pid not in running:
            continue
        index = running.pop(process.pid)
        if index not in outcomes:
            outcomes[index] = _lost(
                jobs[index], f"worker process {process.pid} exited with code {process.exitcode}"
            )
            on_done(outcomes[index])
