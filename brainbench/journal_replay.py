"""Moved to brainbench.records.replay; this path is kept for plugins written against brainbench <= 0.1."""

from brainbench.records.replay import (
    LOGGED_LATER_TAG,
    PROGRESS,
    REPLAY_TAG,
    Journal,
    JournalError,
    read_journal,
    replay,
    why_not_its_run,
)

__all__ = ["LOGGED_LATER_TAG", "PROGRESS", "REPLAY_TAG", "Journal", "JournalError", "read_journal", "replay",
           "why_not_its_run"]
