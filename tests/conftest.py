"""Shared fixtures: every test gets its own BRAINBENCH_HOME and a fresh plugin set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainbench.plugins import reset_plugins

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("bbhome")
    monkeypatch.setenv("BRAINBENCH_HOME", str(home))
    monkeypatch.delenv("BRAINBENCH_PLUGINS", raising=False)
    monkeypatch.delenv("BRAINBENCH_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reset_plugins()
    yield home
    reset_plugins()


def write_dist(site: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> None:
    """An installed distribution as importlib.metadata sees it: dist-info with an entry point + module."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[brainbench]\n{entry_name or module} = {module}\n")
    (site / f"{module}.py").write_text(source)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "brainbench.cli.app", *args],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )


def pip_install_target(source: Path, target: Path) -> None:
    """Install a plugin package with pip into a folder (offline, no build isolation)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
