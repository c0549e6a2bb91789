"""Where brainbench keeps generated data and caches (``BRAINBENCH_HOME``, default ~/.cache/brainbench)."""

from __future__ import annotations

import os
from pathlib import Path


def home_folder() -> Path:
    """The home's path, created or not."""
    root = os.environ.get("BRAINBENCH_HOME")
    return Path(root) if root else Path.home() / ".cache" / "brainbench"


_CHECKED: set[Path] = set()


def home() -> Path:
    """The home, created and checked writable (once per process): a read-only home is one clear error."""
    path = home_folder()
    if path not in _CHECKED:
        from brainbench.writable import check_writable

        check_writable(path, "run folders and caches (BRAINBENCH_HOME)", "set BRAINBENCH_HOME to a writable folder")
        _CHECKED.add(path)
    return path


def synthetic_root(kind: str, scale: str, seed: int) -> Path:
    """Folder the simulator writes one synthetic dataset into."""
    return home() / "synthetic" / f"{kind}-{scale}-seed{seed}"
