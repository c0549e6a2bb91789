"""Moved to brainbench.records (query, busy, tracker, record); these names are kept for plugins written against
brainbench <= 0.1. New code imports from brainbench.records.*."""

from brainbench.records.busy import (
    BUSY_MESSAGES,
    LOCK_MESSAGES,
    RetryingClient,
    StoreBusyError,
    busy_reason,
    is_busy_error,
    is_lock_error,
    retry_busy,
    retry_locked,
)
from brainbench.records.query import (
    CELL_KEY_TAG,
    KIND_TAG,
    MATRIX_TAG,
    PARENT_TAG,
    RunView,
    cell_runs,
    children,
    experiment_exists,
    finished_cell_keys,
    get_run,
    matrix_parents,
    per_item_outcomes,
    search,
    set_status,
    set_tags,
)
from brainbench.records.record import SystemMetrics
from brainbench.records.tracker import SafeTracker, Tracker

__all__ = [
    "BUSY_MESSAGES", "CELL_KEY_TAG", "KIND_TAG", "LOCK_MESSAGES", "MATRIX_TAG", "PARENT_TAG", "RetryingClient",
    "RunView", "SafeTracker", "StoreBusyError", "SystemMetrics", "Tracker", "busy_reason", "cell_runs", "children",
    "experiment_exists", "finished_cell_keys", "get_run", "is_busy_error", "is_lock_error", "matrix_parents",
    "per_item_outcomes", "retry_busy", "retry_locked", "search", "set_status", "set_tags",
]
