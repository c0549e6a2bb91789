"""Papers brainbench reproduces: each a matrix spec (``NAME.toml``, runnable with ``brainbench matrix run``)
and its published numbers (``NAME_published.toml``), shipped with the package (see ``brainbench reproduce``)."""

from __future__ import annotations

from pathlib import Path

from brainbench.errors import DataError

HERE = Path(__file__).resolve().parent
PAPERS = ("litemind",)


def _check(name: str) -> None:
    if name not in PAPERS:
        raise DataError(f"no paper {name!r} to reproduce; known: {', '.join(PAPERS)}")


def spec_path(name: str) -> Path:
    """The shipped matrix spec of paper ``name``."""
    _check(name)
    return HERE / f"{name}.toml"


def published_path(name: str) -> Path:
    """The shipped file of paper ``name``'s published numbers, with their sources."""
    _check(name)
    return HERE / f"{name}_published.toml"
