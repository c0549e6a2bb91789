"""Tables as plain text: the one Markdown table writer, and fixed-width columns fitted to a terminal's width.

Cells are strings already; ``aligns`` holds one letter per column, ``l`` (left) or ``r`` (right).
"""

from __future__ import annotations


def markdown_table(headers: list[str], rows: list[list[str]], aligns: str | None = None) -> list[str]:
    """Header, rule and body lines of one Markdown table; right-aligned columns get a ``--:`` rule."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    rules = ["--:" if align == "r" else "---" for align in (aligns or "l" * len(headers))]
    return [line(headers), "|" + "|".join(rules) + "|", *(line(row) for row in rows)]


def _render(headers: list[str], rows: list[list[str]], aligns: str) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, aligns, strict=True)]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def fit_table(keys: list[str], values: list[str], rows: list[list[str]], width: int) -> list[str]:
    """A plain-text table no wider than ``width``: cells are never wrapped or cut; when the value columns do
    not fit beside the key columns they are split over several tables, each repeating the key columns."""
    n_keys = len(keys)
    # Drop value columns that are empty in every row (e.g. parameters a plugin does not report).
    keep = [i for i in range(len(values)) if any(r[n_keys + i] for r in rows)] or list(range(len(values)))
    values = [values[i] for i in keep]
    rows = [r[:n_keys] + [r[n_keys + i] for i in keep] for r in rows]
    key_width = sum(max([len(k), *(len(r[i]) for r in rows)]) + 2 for i, k in enumerate(keys))
    value_widths = [max([len(v), *(len(r[n_keys + i]) for r in rows)]) + 2 for i, v in enumerate(values)]
    chunks: list[list[int]] = [[]]
    used = key_width
    for i, w in enumerate(value_widths):
        if chunks[-1] and used + w > width + 2:  # +2: no separator after the last column
            chunks.append([])
            used = key_width
        chunks[-1].append(i)
        used += w
    out: list[str] = []
    for index, chunk in enumerate(chunks):
        if index:
            out.append("")
        headers = keys + [values[i] for i in chunk]
        body = [r[:n_keys] + [r[n_keys + i] for i in chunk] for r in rows]
        out += _render(headers, body, "l" * n_keys + "r" * len(chunk))
    return out
