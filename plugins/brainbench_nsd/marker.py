"""The simulator's mark on a folder: data it wrote stay labelled synthetic through every reader and rewrite."""

from __future__ import annotations

import json
from pathlib import Path

SYNTHETIC_MARKER = "brainbench_synthetic.json"


def is_synthetic(root: Path) -> bool:
    return (Path(root) / SYNTHETIC_MARKER).exists()


def mark_synthetic(root: Path, source: str) -> None:
    """Leave the marker in ``root``: these files were made from simulated data (``source`` says how)."""
    path = Path(root) / SYNTHETIC_MARKER
    if not path.exists():
        path.write_text(json.dumps({"generator": "brainbench (rewritten from simulated data)", "source": source}))
