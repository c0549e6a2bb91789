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


def metric_steps(db: Path, run_uuid: str, key: str) -> list[int]:
    with sqlite3.connect(db, timeout=30) as con:
        return sorted(r[0] for r in con.execute("select step from metrics where run_uuid=? and key=?", (run_uuid, key)))


def test_an_interrupted_training_is_never_deleted_silently_and_resumes_with_its_whole_history(tmp_path):
    db = tmp_path / "mlflow.db"
    home = tmp_path / "home"
    env = {**os.environ, "BRAINBENCH_HOME": str(home)}
    cell = ["run", "litemind", "--task", "retrieval", "--epochs", "12", "--device", "cpu", "--tracking-uri",
            f"sqlite:///{db}", "--opt", "widths=16,8,4", "--opt", "depths=1,1,1,1"]

    def brainbench_run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([brainbench(), *cell, *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)

    victim = subprocess.Popen([brainbench(), *cell], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(home.glob("runs/*/*/checkpoints/last.pt")):
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (checkpoint,) = home.glob("runs/*/*/checkpoints/last.pt")

    fresh = brainbench_run()  # a fresh start over it refuses, naming both ways out
    assert fresh.returncode != 0 and "has an interrupted training" in fresh.stderr
    assert "--resume" in fresh.stderr and "--restart" in fresh.stderr and checkpoint.is_file()

    resumed = brainbench_run("--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with sqlite3.connect(db, timeout=30) as con:
        runs = dict(con.execute("select status, run_uuid from runs where status != 'FAILED'").fetchall())
    assert set(runs) == {"KILLED", "FINISHED"}  # the killed run closed, the resumed one finished
    finished = runs["FINISHED"]
    assert metric_steps(db, finished, "train_loss") == list(range(1, 13))  # every epoch, the replayed ones too
    with sqlite3.connect(db, timeout=30) as con:
        resumed_from = con.execute("select value from params where run_uuid=? and key='recipe.resumed_from_epoch'",
                                   (finished,)).fetchone()[0]
    assert int(resumed_from) >= 1

    restarted = brainbench_run("--restart", "--epochs", "1")  # another cell key: nothing to discard, just runs
    assert restarted.returncode == 0, restarted.stderr
