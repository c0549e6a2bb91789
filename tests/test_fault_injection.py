"""Fault injection: a Lite-Mind cell SIGKILLed at random moments (mid-epoch, mid-checkpoint, in start-up) and
resumed each time ends with exactly the metrics of an uninterrupted run; no run is lost or left RUNNING."""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
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


def kill_when(process: subprocess.Popen, after_epoch: int | None, delay: float) -> bool:
    """SIGKILL ``process`` ``delay`` seconds after it prints its ``after_epoch``-th epoch line (None: ``delay``
    seconds after its start); False when it ended first."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    seen = 0
    while after_epoch is not None and seen < after_epoch:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if process.poll() is not None:
                return False
            continue
        seen += bool(re.match(r"\s*epoch \d+\b", line))
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        return True


def test_random_kills_then_resume_give_the_uninterrupted_result(tmp_path):
    db = tmp_path / "mlflow.db"
    common = [*CELL, "--tracking-uri", f"sqlite:///{db}"]
    # the uninterrupted run in a home of its own, so --resume below never finds its (finished) checkpoints
    # One thread for every run: float sums in another order (another thread count, chosen from the load) give
    # other last bits, and a near-chance model's rankings then differ; identity holds at equal thread counts.
    threads = {"BRAINBENCH_THREADS": "1"}
    started = time.monotonic()
    baseline = subprocess.run([brainbench(), *common, "--experiment", "baseline"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=900,
                              env={**os.environ, **threads, "BRAINBENCH_HOME": str(tmp_path / "home0")})
    duration = time.monotonic() - started  # how long one whole run takes here, to aim the kills inside it
    assert baseline.returncode == 0, baseline.stderr
    env = {**os.environ, **threads, "BRAINBENCH_HOME": str(tmp_path / "home")}

    rng = random.Random(17)
    injected = 0
    for attempt in range(INJECTIONS + 3):
        process = subprocess.Popen([brainbench(), *common, "--experiment", "faults", "--resume"], cwd=tmp_path,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if attempt < INJECTIONS:
            # Kills aimed by what the run has done, not by the clock (a loaded machine shifts every time):
            # in start-up (before any epoch), or a moment after one of its first epochs (mid-epoch, often
            # mid-checkpoint).
            after_epoch = rng.choice([None, 1, 1, 2, 3])
            if kill_when(process, after_epoch, delay=rng.uniform(0.0, 0.3) if after_epoch else
                         rng.uniform(0.05, 0.4) * duration):
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
