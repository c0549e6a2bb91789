"""A matrix against a real ``mlflow server`` on 127.0.0.1 (SQLite backend), two worker processes at once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_matrix_run import SPEC, run_spec, template_store, tiny_plugin  # noqa: F401


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, template_store):  # noqa: F811
    shutil.copy(template_store, tmp_path / "server.db")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                pytest.fail("mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_matrix_against_a_tracking_server(tiny_plugin, mlflow_server, tmp_path):  # noqa: F811
    from brainbench.records.query import children, get_run
    from brainbench.records.tracker import SafeTracker

    text = SPEC.replace('"encoder_options.alpha" = [1.0, 100.0]', "").replace("seed = [0, 1]", "seed = [0]")
    report = run_spec(text, mlflow_server, launcher="local-gpus", workers=2, threads_per_worker=1)
    assert (report.n_cells, report.ran, report.failed) == (2, 2, 0)
    tracker = SafeTracker(mlflow_server, "brainbench")
    assert get_run(tracker, report.parent_run_id).status == "FINISHED"
    runs = children(tracker, report.parent_run_id)
    assert sorted(r.params["subject"] for r in runs) == ["1", "2"]
    assert all(r.status == "FINISHED" and "test.top1" in r.metrics for r in runs)
    assert len({r.tags["brainbench.worker"] for r in runs}) == 2
    # Artifacts went through the server's artifact root.
    assert any((tmp_path / "artifacts").rglob("matrix.toml"))
    assert any((tmp_path / "artifacts").rglob("summary.csv"))
