"""Moved to brainbench.records (store, record, tracker); these names are kept for plugins written against
brainbench <= 0.1. New code imports from brainbench.records.*."""

from brainbench.records.record import MAX_PARAM_LENGTH, RunRecord, code_version, flatten_params, run_name
from brainbench.records.store import (
    BOUNDED_HTTP_RETRIES,
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    SERVICE_URIS,
    absolute_uri,
    check_reachable,
    is_absolute_uri,
    open_sqlite_once,
    resolve_tracking_uri,
    schema_ready,
    sqlite_path,
)
from brainbench.records.tracker import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracker

__all__ = [
    "BOUNDED_HTTP_RETRIES", "DEFAULT_EXPERIMENT", "DEFAULT_TRACKING_URI", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG",
    "MAX_PARAM_LENGTH", "SERVICE_URIS", "RunRecord", "Tracker", "absolute_uri", "check_reachable", "code_version",
    "flatten_params", "is_absolute_uri", "open_sqlite_once", "resolve_tracking_uri", "run_name", "schema_ready",
    "sqlite_path",
]
