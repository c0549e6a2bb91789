"""Runs whose process is gone are closed as KILLED by the next start, against a real MLflow store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from brainbench.records import liveness


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
    import psutil

    tags = liveness.owner_tags()
    assert tags[liveness.PID_TAG] == str(os.getpid()) and tags[liveness.HOST_TAG] == socket.gethostname()
    assert float(tags[liveness.STARTED_TAG]) == pytest.approx(psutil.Process().create_time(), abs=0.01)
    assert tags[liveness.PID_NAMESPACE_TAG] == os.readlink("/proc/self/ns/pid")
    assert tags[liveness.BOOT_TAG] == open("/proc/sys/kernel/random/boot_id").read().strip()
    assert liveness.process_alive(os.getpid(), tags[liveness.STARTED_TAG])
    assert liveness.owner_state(tags) == "alive"


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
        "rebooted since": {**here, liveness.BOOT_TAG: "00000000-0000-0000-0000-000000000000"},
        "other pid namespace, recent": {**here, liveness.PID_NAMESPACE_TAG: "pid:[1]", liveness.PID_TAG: "1"},
        "other pid namespace, silent": {**here, liveness.PID_NAMESPACE_TAG: "pid:[1]", liveness.HEARTBEAT_TAG: "1000"},
    }
    ids = {name: client.create_run(experiment, tags={"mlflow.runName": name, **tags}).info.run_id
           for name, tags in cases.items()}
    closed = liveness.close_orphaned_runs(client, [experiment])
    killed = ("dead", "pid reused", "other host, silent", "rebooted since", "other pid namespace, silent")
    assert sorted(closed) == sorted(ids[name] for name in killed)
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {
        "alive": "RUNNING", "dead": "KILLED", "pid reused": "KILLED", "other host, silent": "KILLED",
        "other host, recent": "RUNNING", "no owner recorded": "RUNNING", "rebooted since": "KILLED",
        "other pid namespace, recent": "RUNNING", "other pid namespace, silent": "KILLED",
    }
    note = client.get_run(ids["dead"]).data.tags[liveness.NOTE_TAG]
    assert "was gone" in note and "--resume" in note
    assert liveness.close_orphaned_runs(client, [experiment]) == []  # nothing left to close


OWNER_IN_A_CONTAINER = """
import json, sys, time
from brainbench.records.liveness import owner_tags
print(json.dumps(owner_tags()), flush=True)
sys.stdin.read()  # trains until the parent says stop
"""


def unshare_pid_works() -> bool:
    try:
        done = subprocess.run(["unshare", "-Urpf", "--mount-proc", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not unshare_pid_works(), reason="needs unprivileged PID namespaces (unshare -Urpf)")
def test_a_live_run_in_another_pid_namespace_on_this_host_is_not_killed(client):
    """A real process in its own PID namespace (as in a container with the host's name) owns a run: its pid (1
    there) names another process here, so it is neither checked by pid nor killed while its heartbeat is fresh."""
    client, experiment = client
    child = subprocess.Popen(["unshare", "-Urpf", "--mount-proc", sys.executable, "-c", OWNER_IN_A_CONTAINER],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        tags = json.loads(child.stdout.readline())
        assert tags[liveness.HOST_TAG] == socket.gethostname() and tags[liveness.PID_TAG] in ("1", "2")
        assert tags[liveness.PID_NAMESPACE_TAG] != liveness.pid_namespace()
        run_id = client.create_run(experiment, tags=tags).info.run_id
        assert liveness.owner_state(tags) == "unknown"
        assert liveness.close_orphaned_runs(client, [experiment]) == []
        assert client.get_run(run_id).info.status == "RUNNING"
    finally:
        child.communicate("stop", timeout=60)
