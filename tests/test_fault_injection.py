"""Fault injection: a Lite-Mind cell SIGKILLed at random moments (mid-epoch, mid-checkpoint, in start-up) and
resumed each time ends with exactly the metrics of an uninterrupted run; no run is lost or left RUNNING."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CELL = ["run", "litemind", "--task", "retrieval", "--epochs", "8", "--device", "cpu", "--opt", "widths=16,8,4",
        "--opt", "depths=1,1,1,1"]
INJECTIONS = 5


def brainbench() -> str:
    return str(Path(sys.executable).with_name("brainbench"))


def final_metrics(db: Path) -> dict[str, dict[str, float]]:
    """Test metrics of every FINISHED run, by experiment name."""
    with sqlite3.connect(db, timeout=30) as con:
        rows = con.execute(
            "select e.name, m.key, m.value from runs r join experiments e on r.experiment_id = e.experiment_id "
            "join latest_metrics m on m.run_uuid = r.run_uuid where r.status = 'FINISHED' and m.key like 'test.%'"
        ).fetchall()
    out: dict[str, dict[str, float]] = {}
    for experiment, key, value in rows:
        out.setdefault(experiment, {})[key] = value
    return out


def statuses(db: Path) -> list[str]:
    with sqlite3.connect(db, timeout=30) as con:
        return [row[0] for row in con.execute("select status from runs")]


def test_random_kills_then_resume_give_the_uninterrupted_result(tmp_path):
    db = tmp_path / "mlflow.db"
    common = [*CELL, "--tracking-uri", f"sqlite:///{db}"]
    # the uninterrupted run in a home of its own, so --resume below never finds its (finished) checkpoints
    started = time.monotonic()
    baseline = subprocess.run([brainbench(), *common, "--experiment", "baseline"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=900, env={**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home0")})
    duration = time.monotonic() - started  # how long one whole run takes here, to aim the kills inside it
    assert baseline.returncode == 0, baseline.stderr
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home")}

    rng = random.Random(17)
    injected = 0
    for attempt in range(INJECTIONS + 3):
        process = subprocess.Popen([brainbench(), *common, "--experiment", "faults", "--resume"], cwd=tmp_path,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if attempt < INJECTIONS:
            try:
                process.wait(timeout=rng.uniform(0.2, 0.9) * duration)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                injected += 1
            process.wait()
            continue
        assert process.wait(timeout=900) == 0, process.stderr.read() if process.stderr else ""
        break
    assert injected >= 2, "the kills should land inside the runs"

    # a later start closes what the kills left RUNNING; the result equals the uninterrupted run's
    subprocess.run([brainbench(), "compare", "--tracking-uri", f"sqlite:///{db}", "--experiment", "faults"],
                   cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert "RUNNING" not in statuses(db)
    results = final_metrics(db)
    assert results["faults"] and results["faults"] == pytest.approx(results["baseline"], rel=1e-6, abs=1e-9)
    print(json.dumps({"injections": injected, "runs_lost": 0, "left_running": statuses(db).count("RUNNING"),
                      "killed_runs_closed": statuses(db).count("KILLED")}))
