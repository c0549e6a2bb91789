"""A busy store is waited for, not declared lost: SQLite's "database is locked" while other processes write,
a tracking server's HTTP 429 / 503. Any other failure is raised at once (a journaled run then goes offline)."""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from brainbench.errors import TrackingError

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
