"""The SQLite store's lock and ready note live under BRAINBENCH_HOME, keyed by the store's absolute path: the
user's folder holds only mlflow.db (and the artifacts), and every process naming the store finds the same lock."""

from __future__ import annotations

import os
from pathlib import Path

from brainbench.locks import home_note
from tests.conftest import run_cli


def test_a_run_leaves_no_lock_or_marker_beside_the_store(tmp_path: Path, isolated_home: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = run_cli("run", "ridge", "--task", "retrieval", "--dataset-opt", "scale=tiny", "--device", "cpu", cwd=work)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in work.iterdir()) == ["mlflow.db", "mlruns"]
    notes = sorted(p.name for p in (isolated_home / "locks").iterdir())
    key = home_note(work / "mlflow.db", "").name
    assert notes == [f"{key}.lock", f"{key}.ready"]


def test_the_same_store_named_two_ways_shares_one_lock(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    same = {home_note(Path("a/mlflow.db"), ".lock"), home_note(tmp_path / "link" / "mlflow.db", ".lock"),
            home_note(tmp_path / "a" / ".." / "a" / "mlflow.db", ".lock")}
    assert len(same) == 1
    assert home_note(tmp_path / "b" / "mlflow.db", ".lock") not in same  # another store, another lock
