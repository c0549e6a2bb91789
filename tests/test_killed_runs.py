"""A SIGKILLed `brainbench run` leaves no run RUNNING: the next brainbench start marks it KILLED."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def brainbench() -> str:
    return str(Path(sys.executable).with_name("brainbench"))


def statuses(db: Path) -> list[str]:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return [row[0] for row in con.execute("select status from runs")]
    except sqlite3.Error:
        return []


def test_a_killed_run_is_closed_by_the_next_start(tmp_path):
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home")}
    uri = f"sqlite:///{db}"
    # a cell that trains for a while: kill it once its run exists
    victim = subprocess.Popen(
        [brainbench(), "run", "litemind", "--task", "retrieval", "--epochs", "50", "--device", "cpu",
         "--tracking-uri", uri],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while "RUNNING" not in statuses(db):
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert statuses(db) == ["RUNNING"]  # SIGKILL runs no clean-up

    compare = subprocess.run(
        [brainbench(), "compare", "--tracking-uri", uri], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert statuses(db) == ["KILLED"], compare.stdout + compare.stderr
    assert "marked 1 run(s) KILLED whose process is gone" in compare.stderr


def test_workers_of_a_killed_local_gpus_driver_die_with_it(tmp_path):
    psutil = pytest.importorskip("psutil")
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home"), "CUDA_VISIBLE_DEVICES": ""}
    uri = f"sqlite:///{db}"
    driver = subprocess.Popen(
        [brainbench(), "run", "ridge", "--task", "retrieval", "--seed", "0", "--seed", "1", "--seed", "2",
         "--device", "cpu", "--launcher", "local-gpus", "--tracking-uri", uri],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    workers: list = []
    while not (workers and "RUNNING" in statuses(db) and statuses(db).count("RUNNING") >= 2):
        assert driver.poll() is None, "the matrix ended before it could be killed"
        assert time.monotonic() < deadline, "no worker started a cell"
        workers = [p for p in psutil.Process(driver.pid).children(recursive=True) if "multiprocessing" in
                   " ".join(p.cmdline())]
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers outlived their driver: {[p.pid for p in alive]}"

    subprocess.run([brainbench(), "compare", "--tracking-uri", uri], cwd=tmp_path, env=env, capture_output=True,
                   timeout=300)
    assert "RUNNING" not in statuses(db)  # the parent and the cell the worker had started are closed
