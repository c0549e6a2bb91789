"""A busy store is not a lost store: SQLite's "database is locked" and a server's HTTP 429 / 503 are waited
for (bounded, said on stderr) and do not put a run offline; a store that is not there is not waited for.

Real SQLite stores locked by another process, a real HTTP server answering 503/429, MLflow's own client.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from brainbench.records import busy
from brainbench.records.busy import RetryingClient, StoreBusyError, is_busy_error
from brainbench.records.journal import UNLOGGED
from brainbench.records.tracker import SafeTracker

LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")  # what a writer holding the store looks like to everyone else
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


#: MLflow has SQLite itself wait up to 20 s for a lock (busy_timeout) before it says "database is locked":
#: brainbench's waiting (and its message) begins after that.
LOCKED_SECONDS = 25


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def lock_store(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holds the store's write lock for ``seconds`` (returns once it holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def journaled_run(tmp_path: Path, template: Path):
    db = tmp_path / "mlflow.db"
    shutil.copy(template, db)
    tracker = SafeTracker(f"sqlite:///{db}", "brainbench")
    _ = tracker.client  # opened before the lock, as a run that is under way
    folder = tmp_path / "run"
    folder.mkdir()
    return db, tracker, folder


def test_a_locked_store_is_waited_for_and_the_run_stays_online(tmp_path: Path, template, capfd, monkeypatch):
    monkeypatch.setattr(busy, "_last_notice", 0.0)
    db, tracker, folder = journaled_run(tmp_path, template)
    with tracker.run("ridge s1 seed0 retrieval", keep_in=folder) as record:
        record.log_params({"encoder": "ridge"})
        holder = lock_store(db, LOCKED_SECONDS)
        started = time.monotonic()
        record.log_metrics({"train_loss": 0.5}, step=1)  # waits for the lock
        waited = time.monotonic() - started
        record.log_metrics({"test.top1": 0.25})
        holder.wait(timeout=60)
    assert not record.offline and not (folder / UNLOGGED).exists()
    assert waited >= LOCKED_SECONDS - 3, waited  # it did meet the lock
    run = tracker.client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"train_loss": 0.5, "test.top1": 0.25}
    err = capfd.readouterr().err
    assert "the MLflow store is busy (database is locked); waiting (up to 900 s)..." in err, err
    assert "the MLflow store answered again after" in err and "stopped answering" not in err


def test_a_store_busy_past_the_patience_goes_offline_saying_so(tmp_path: Path, template, monkeypatch, capfd):
    from brainbench.records.replay import replay

    monkeypatch.setattr(busy, "BUSY_PATIENCE_SECONDS", 2.0)
    db, tracker, folder = journaled_run(tmp_path, template)
    with pytest.raises(Exception, match="Nothing is lost"):
        with tracker.run("ridge s1 seed0 retrieval", keep_in=folder) as record:
            holder = lock_store(db, LOCKED_SECONDS)
            record.log_metrics({"train_loss": 0.5}, step=1)
            record.log_metrics({"test.top1": 0.25})
    assert isinstance(record.offline_error, StoreBusyError)
    assert "stayed busy for" in (folder / UNLOGGED).read_text()
    holder.wait(timeout=60)
    monkeypatch.setattr(busy, "BUSY_PATIENCE_SECONDS", 900.0)
    done = replay(folder)  # the lock is gone: the kept records go into the run
    assert done["status"] == "FINISHED" and done["replayed"] == 2
    assert tracker.client.get_run(record.run_id).data.metrics == {"train_loss": 0.5, "test.top1": 0.25}
    assert "stayed busy" in capfd.readouterr().err


class BusyThenEmpty(BaseHTTPRequestHandler):
    """A tracking server that answers ``status`` for its first ``busy_for`` seconds, then "no such experiment"."""

    status = 503
    busy_for = busy.BUSY_NOTICE_AFTER + 2
    started = 0.0
    requests = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests += 1
        if time.monotonic() - type(self).started < type(self).busy_for:
            self.send_response(type(self).status)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such experiment"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("status", [503, 429])
def test_a_server_answering_busy_is_waited_for(status: int, monkeypatch, capfd):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries off: ours are tested
    monkeypatch.setattr(busy, "_last_notice", 0.0)  # an earlier test's notice does not hold this one
    handler = type("Handler", (BusyThenEmpty,), {"status": status, "started": time.monotonic(), "requests": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RetryingClient(MlflowClient(tracking_uri=f"http://127.0.0.1:{server.server_port}"))
        started = time.monotonic()
        assert client.get_experiment_by_name("brainbench") is None  # the answer once it is not busy
        assert time.monotonic() - started >= handler.busy_for - 0.5 and handler.requests > 2
    finally:
        server.shutdown()
    err = capfd.readouterr().err
    assert f"the MLflow store is busy (HTTP {status}); waiting" in err, err


def test_a_store_that_is_not_there_is_not_waited_for(monkeypatch, capfd):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RetryingClient(MlflowClient(tracking_uri=f"http://127.0.0.1:{port}"))
    started = time.monotonic()
    with pytest.raises(Exception) as refused:
        client.get_experiment_by_name("brainbench")
    assert time.monotonic() - started < 5 and not is_busy_error(refused.value)
    assert "Connection refused" in str(refused.value) and "busy" not in capfd.readouterr().err
