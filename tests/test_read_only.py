"""Check before work: a read-only home, store or working directory is one clear line before any training;
a store given by --tracking-uri keeps its artifacts beside it, so a read-only working directory loses nothing.
Read-only folders are real read-only mounts (tests run as root, which file modes do not stop)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only folder here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def run(cwd: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    script = str(Path(sys.executable).with_name("brainbench"))
    return subprocess.run([script, "run", "ridge", "--task", "retrieval", *extra], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "BRAINBENCH_HOME": str(home)}, timeout=600)


def test_a_read_only_home_is_one_clear_error(read_only, tmp_path):
    done = run(tmp_path, read_only, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert done.returncode == 2
    expected = f"cannot write run folders and caches (BRAINBENCH_HOME) in {read_only} (Read-only file system)"
    assert expected in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "mlflow.db").exists()  # stopped before any run


def test_a_read_only_store_folder_is_one_clear_error(read_only, tmp_path):
    done = run(read_only, tmp_path / "home")  # the default store: sqlite:///mlflow.db in the working directory
    assert done.returncode == 2
    assert "cannot write the MLflow store mlflow.db" in done.stderr and "--tracking-uri" in done.stderr


def test_a_read_only_working_directory_with_a_writable_store_loses_nothing(read_only, tmp_path):
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    done = run(read_only, tmp_path / "home", "--tracking-uri", f"sqlite:///{store}")
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(store) as con:
        (status,) = con.execute("select status from runs").fetchone()
    assert status == "FINISHED"
    assert list((store.parent / "mlruns").rglob("config.json"))  # artifacts beside the store
