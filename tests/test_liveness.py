"""Runs whose process is gone are closed as KILLED by the next start, against a real MLflow store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from brainbench import liveness


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("brainbench")
    return client, experiment


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_owner_tags_name_this_process():
    tags = liveness.owner_tags()
    assert tags[liveness.PID_TAG] == str(os.getpid()) and tags[liveness.HOST_TAG] == socket.gethostname()
    assert liveness.process_alive(os.getpid(), tags[liveness.STARTED_TAG])


def test_orphans_are_closed_as_killed_and_live_runs_are_left_alone(client):
    client, experiment = client
    here = liveness.owner_tags()
    cases = {
        "alive": here,
        "dead": {**here, liveness.PID_TAG: str(dead_pid()), liveness.STARTED_TAG: ""},
        "pid reused": {**here, liveness.STARTED_TAG: "1"},  # our pid, but another process's start time
        "other host, silent": {**here, liveness.HOST_TAG: "node-7", liveness.HEARTBEAT_TAG: "1000"},
        "other host, recent": {**here, liveness.HOST_TAG: "node-7", liveness.HEARTBEAT_TAG: f"{time.time():.0f}"},
        "no owner recorded": {},
    }
    ids = {name: client.create_run(experiment, tags={"mlflow.runName": name, **tags}).info.run_id
           for name, tags in cases.items()}
    closed = liveness.close_orphaned_runs(client, [experiment])
    assert sorted(closed) == sorted(ids[name] for name in ("dead", "pid reused", "other host, silent"))
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {
        "alive": "RUNNING", "dead": "KILLED", "pid reused": "KILLED", "other host, silent": "KILLED",
        "other host, recent": "RUNNING", "no owner recorded": "RUNNING",
    }
    note = client.get_run(ids["dead"]).data.tags[liveness.NOTE_TAG]
    assert "was gone" in note and "--resume" in note
    assert liveness.close_orphaned_runs(client, [experiment]) == []  # nothing left to close
