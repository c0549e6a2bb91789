"""Moved to brainbench.records.journal; this path is kept for plugins written against brainbench <= 0.1."""

from brainbench.records.journal import (
    CALLS,
    JOURNAL,
    JOURNAL_TOKEN_TAG,
    LOG_MODEL,
    MODEL_EXAMPLE_FILE,
    MODEL_SPEC_FILE,
    UNLOGGED,
    JournaledRecord,
    StoreOfflineError,
    find_pending,
    new_token,
    pending,
)

__all__ = [
    "CALLS", "JOURNAL", "JOURNAL_TOKEN_TAG", "LOG_MODEL", "MODEL_EXAMPLE_FILE", "MODEL_SPEC_FILE", "UNLOGGED",
    "JournaledRecord", "StoreOfflineError", "find_pending", "new_token", "pending",
]
