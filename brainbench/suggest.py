"""Did-you-mean suggestions for a misspelt name: the one closeness rule every error message uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: How alike a name must be to be suggested (difflib's ratio; 0.5 catches one or two wrong letters in short names).
CUTOFF = 0.5


def close_names(word: str, candidates: Iterable[str], n: int = 1, cutoff: float = CUTOFF) -> list[str]:
    """Up to ``n`` of ``candidates`` most like ``word``, best first."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=cutoff)


def closest(word: str, candidates: Iterable[str], cutoff: float = CUTOFF) -> str | None:
    """The candidate most like ``word``, or None when none is close."""
    found = close_names(word, candidates, 1, cutoff)
    return found[0] if found else None
