"""Where brainbench keeps generated data and caches (``BRAINBENCH_HOME``, default ~/.cache/brainbench)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    root = os.environ.get("BRAINBENCH_HOME")
    path = Path(root) if root else Path.home() / ".cache" / "brainbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def synthetic_root(kind: str, scale: str, seed: int) -> Path:
    """Folder the simulator writes one synthetic dataset into."""
    return home() / "synthetic" / f"{kind}-{scale}-seed{seed}"
