"""Reading runs back from MLflow, run status changes, waiting on a busy store, system metrics.

Next to brainbench/tracking.py (which writes runs) this is the other module that touches mlflow; every import
of mlflow stays inside a function so the CLI starts fast.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from brainbench.errors import TrackingError
from brainbench.tracking import Tracker

T = TypeVar("T")
#: What a store says when it is busy, not gone: SQLite's lock (also inside a tracking server's error), and a
#: tracking server's HTTP 429 / 503 once MLflow's own retries of them ran out.
BUSY_MESSAGES = ("database is locked", "database table is locked", "too many 429 error responses",
                 "too many 503 error responses")
LOCK_MESSAGES = BUSY_MESSAGES  # the earlier name
#: How long a busy store is waited for before a run gives up on it (and, journaled, goes on offline).
BUSY_PATIENCE_SECONDS = float(os.environ.get("BRAINBENCH_STORE_BUSY_SECONDS", "900"))
#: Waits shorter than this pass silently (a few writers at once wait this long routinely).
BUSY_NOTICE_AFTER = 5.0
#: The longest single sleep between tries.
BUSY_MAX_DELAY = 5.0
KIND_TAG = "brainbench.kind"
MATRIX_TAG = "brainbench.matrix_id"
CELL_KEY_TAG = "brainbench.cell_key"
PARENT_TAG = "mlflow.parentRunId"
_last_notice = 0.0


class StoreBusyError(TrackingError):
    """The store stayed busy (locked, or answering 429/503) for longer than the patience allows."""


def busy_reason(exc: BaseException) -> str | None:
    """What says the store is busy ("database is locked", "HTTP 503"), or None when ``exc`` is not that."""
    text = str(exc).lower()
    for message in BUSY_MESSAGES:
        if message in text:
            return f"HTTP {message.split()[2]}" if message.startswith("too many") else message
    return None


def is_busy_error(exc: BaseException) -> bool:
    return busy_reason(exc) is not None


is_lock_error = is_busy_error  # the earlier name


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def retry_busy(
    call: Callable[..., T], *args: Any, patience: float | None = None, base_delay: float = 0.05,
    say: Callable[[str], None] = _say, **kwargs: Any,
) -> T:
    """Call, retrying with jittered exponential backoff while the store is busy (see ``BUSY_MESSAGES``), for
    up to ``patience`` seconds (``BRAINBENCH_STORE_BUSY_SECONDS``, default 15 minutes). A wait of more than a
    few seconds is said on stderr, once per minute at most; a store busy past the patience raises
    StoreBusyError. Any other error is raised at once: a busy store is not a lost one."""
    global _last_notice
    patience = BUSY_PATIENCE_SECONDS if patience is None else patience
    started = time.monotonic()
    attempt = 0
    told = False
    while True:
        try:
            result = call(*args, **kwargs)
        except Exception as exc:
            reason = busy_reason(exc)
            if reason is None:
                raise
            waited = time.monotonic() - started
            if waited >= patience:
                raise StoreBusyError(
                    f"the MLflow store stayed busy for {waited:.0f} s ({reason}); "
                    "BRAINBENCH_STORE_BUSY_SECONDS sets how long to wait"
                ) from exc
            delay = min(BUSY_MAX_DELAY, base_delay * 2 ** min(attempt, 20)) * (0.5 + random.random())
            delay = max(0.0, min(delay, patience - waited))
            if waited + delay >= BUSY_NOTICE_AFTER and not told and time.monotonic() - _last_notice > 60:
                say(f"brainbench: the MLflow store is busy ({reason}); waiting (up to {patience:.0f} s)...")
                told, _last_notice = True, time.monotonic()
            time.sleep(delay)
            attempt += 1
            continue
        if told:
            say(f"brainbench: the MLflow store answered again after {time.monotonic() - started:.0f} s")
        return result


def retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The earlier name of :func:`retry_busy`."""
    return retry_busy(call, *args, **kwargs)


class RetryingClient:
    """An MlflowClient whose every method waits while the store is busy (:func:`retry_busy`)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        # MLflow logs each SQLite error with its traceback before raising it; the error reaches us, and a wait
        # or a failure is said in one line, so the log would only print tracebacks of what is handled
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return retry_busy(value, *args, **kwargs)

        return call


class SafeTracker(Tracker):
    """A Tracker for concurrent writers: cells running side by side share one SQLite store."""

    @property
    def client(self) -> Any:
        if self._client is None:
            retry_busy(Tracker.client.fget, self)  # type: ignore[attr-defined]
            self._client = RetryingClient(self._client)
        return self._client


@dataclass
class RunView:
    """A run read back from MLflow, as plain Python values."""

    run_id: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get(PARENT_TAG)

    @property
    def cell_key(self) -> str | None:
        return self.tags.get(CELL_KEY_TAG) or self.params.get("cell_key")


def _view(run: Any) -> RunView:
    return RunView(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        end_time=run.info.end_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
    )


def search(
    tracker: Tracker, filter_string: str = "", order_by: list[str] | None = None, limit: int | None = None
) -> list[RunView]:
    """Runs of the tracker's experiment matching an MLflow filter, newest first by default."""
    client = tracker.client
    order = order_by or ["attributes.start_time DESC"]
    views: list[RunView] = []
    token = None
    while True:
        page = client.search_runs(
            [tracker.experiment_id],
            filter_string=filter_string,
            order_by=order,
            max_results=min(limit or 1000, 1000),
            page_token=token,
        )
        views.extend(_view(run) for run in page)
        token = page.token
        if not token or (limit is not None and len(views) >= limit):
            return views[:limit] if limit is not None else views


def experiment_exists(tracking_uri: str, name: str) -> bool:
    from mlflow.tracking import MlflowClient

    client = RetryingClient(MlflowClient(tracking_uri=tracking_uri))
    return client.get_experiment_by_name(name) is not None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def get_run(tracker: Tracker, run_id: str) -> RunView | None:
    try:
        return _view(tracker.client.get_run(run_id))
    except Exception as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def matrix_parents(tracker: Tracker, matrix_id: str | None = None) -> list[RunView]:
    """Parent (matrix) runs, newest first; only those of one matrix when ``matrix_id`` is given."""
    clauses = [f"tags.`{KIND_TAG}` = 'matrix'"]
    if matrix_id:
        clauses.append(f"tags.`{MATRIX_TAG}` = {_quote(matrix_id)}")
    return search(tracker, " and ".join(clauses))


def cell_runs(tracker: Tracker) -> list[RunView]:
    return search(tracker, f"tags.`{KIND_TAG}` = 'cell'")


def children(tracker: Tracker, parent_run_id: str) -> list[RunView]:
    return search(tracker, f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)}")


def per_item_outcomes(tracker: Tracker, run_id: str) -> dict[str, Any] | None:
    """A run's per-item outcomes (the ``per_item.json`` artifact), or None when it has none."""
    import os
    import tempfile

    from brainbench.constants import PER_ITEM_FILE

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per run on the terminal
    try:
        names = {item.path for item in tracker.client.list_artifacts(run_id)}
        if PER_ITEM_FILE not in names:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = tracker.client.download_artifacts(run_id, PER_ITEM_FILE, folder)
            with open(path) as handle:
                record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "outcomes" in record and "stimulus_ids" in record else None


def finished_cell_keys(tracker: Tracker, parent_run_id: str) -> set[str]:
    return {
        run.cell_key for run in children(tracker, parent_run_id) if run.status == "FINISHED" and run.cell_key
    }


def set_status(tracker: Tracker, run_id: str, status: str) -> None:
    """RUNNING reopens a run (resume); FINISHED, FAILED or KILLED close it."""
    if status == "RUNNING":
        tracker.client.update_run(run_id, status="RUNNING")
    else:
        tracker.client.set_terminated(run_id, status=status)


def set_tags(tracker: Tracker, run_id: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        tracker.client.set_tag(run_id, key, value if isinstance(value, str) else json.dumps(value))


class SystemMetrics:
    """CPU, memory, disk, network (and GPU with pynvml) metrics of one run, sampled in a thread.

    MLflow's SystemMetricsMonitor works with a client-created run when given its id and tracking URI. Without
    psutil it cannot sample, and this does nothing.
    """

    def __init__(self, tracking_uri: str, run_id: str, interval: float = 5.0) -> None:
        self._monitor: Any = None
        try:
            import psutil  # noqa: F401
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            return
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        try:
            self._monitor = SystemMetricsMonitor(
                run_id, sampling_interval=interval, tracking_uri=tracking_uri
            )
        except Exception:  # monitoring is a nicety; it never stops a cell
            self._monitor = None

    @property
    def active(self) -> bool:
        return self._monitor is not None

    def __enter__(self) -> SystemMetrics:
        if self._monitor is not None:
            self._monitor.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception:
                pass
