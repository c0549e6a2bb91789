"""Ray launcher: each cell is a Ray task asking for one GPU (when the cluster has GPUs) and ``cpus`` CPUs.

Workers get the job as plain data (config dict, tracking URI, experiment, parent run id) and write their own
child run to the tracking store; only the small CellOutcome comes back to the driver.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from brainbench.launch.jobs import CellJob, CellOutcome, execute_job

# Forwarded to workers of a local instance started here, so they see the same data and plugins.
FORWARDED_ENV = (
    "BRAINBENCH_HOME", "BRAINBENCH_PLUGINS", "BRAINBENCH_STRICT_PLUGINS", "BRAINBENCH_THREADS", "PYTHONPATH",
)


def _ray_cell(job: CellJob, cpus: float = 1) -> CellOutcome:
    import socket

    from brainbench.threads import THREADS_ENV, parse_request

    # a cell computes with the CPUs Ray gave it, not every free core of the node (unless told otherwise)
    if parse_request(os.environ.get(THREADS_ENV)) == "auto":
        os.environ[THREADS_ENV] = str(max(1, int(cpus)))

    return execute_job(job, worker=f"ray:{socket.gethostname()}:{os.getpid()}")


def run_ray(
    jobs: list[CellJob],
    on_done: Callable[[CellOutcome], None],
    address: str | None = None,
    cpus_per_cell: float = 1,
    gpus_per_cell: float | None = None,
    local_cpus: int | None = None,
) -> list[CellOutcome]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            init["address"] = address
        else:
            init["num_cpus"] = local_cpus or os.cpu_count() or 1
            init["runtime_env"] = {"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
        ray.init(**init)
    try:
        if gpus_per_cell is None:
            gpus_per_cell = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(_ray_cell).options(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=1)
        pending = {remote.remote(job, cpus_per_cell): index for index, job in enumerate(jobs)}
        outcomes: dict[int, CellOutcome] = {}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    outcome = ray.get(done[0])
                except Exception as exc:  # the worker or its node died; the cell is not finished
                    outcome = _failed(jobs[index], f"Ray task failed: {type(exc).__name__}: {exc}")
                outcomes[index] = outcome
                on_done(outcome)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # raises KeyboardInterrupt in the task, so its child run is marked KILLED
            raise
        return [outcomes[index] for index in range(len(jobs))]
    finally:
        if started_here:
            ray.shutdown()


def _failed(job: CellJob, why: str) -> CellOutcome:
    from brainbench.config import RunConfig

    config = RunConfig.from_dict(job.config)
    return CellOutcome(config.key, config.label(), "FAILED", error=why[:2000])
