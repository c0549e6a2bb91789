"""Moved to brainbench.records (replay, journal_check); this path is kept for plugins written against
brainbench <= 0.1."""

from brainbench.records.journal_check import Journal, JournalError, read_journal
from brainbench.records.replay import LOGGED_LATER_TAG, PROGRESS, REPLAY_TAG, replay, why_not_its_run

__all__ = ["LOGGED_LATER_TAG", "PROGRESS", "REPLAY_TAG", "Journal", "JournalError", "read_journal", "replay",
           "why_not_its_run"]
