"""Fault injection: the MLflow tracking server is stopped mid-run. Training finishes, nothing is lost (the run
folder keeps every record), the run says how to log them, a new run of the cell will not delete them, and
``brainbench log`` puts them into the same run once the server is back (or into a new run of another store)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EPOCHS = 6
CELL = ["run", "litemind", "--task", "retrieval", "--epochs", str(EPOCHS), "--device", "cpu",
        "--opt", "widths=16,8,4", "--opt", "depths=1,1,1,1"]


def brainbench() -> str:
    return str(Path(sys.executable).with_name("brainbench"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, artifacts served over HTTP), in its own group."""
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "a"), start_new_session=True,
    )
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            stop_server(process)
            pytest.fail("mlflow server did not start:\n" + (folder / "server.log").read_text()[-3000:])
        time.sleep(0.5)


def stop_server(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the server and its workers, at once: a crash, not a shutdown
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def test_server_stopped_mid_run_loses_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home")}
    server = start_server(tmp_path, port)
    try:
        run = subprocess.Popen([brainbench(), *CELL, "--log-model", "--tracking-uri", url], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in run.stderr:  # the server goes away once the run has logged its second epoch
            seen.append(line)
            if re.match(r"\s*epoch 2\b", line):
                stop_server(server)
                break
        else:
            pytest.fail("the run never reached epoch 2:\n" + "".join(seen)[-3000:])
        out, err = run.communicate(timeout=900)
    finally:
        stop_server(server)
    err = "".join(seen) + err

    # training finished, the results were printed, and the message says where everything is and what to do
    assert run.returncode == 2, err
    assert "top1" in out or "f→i" in out or "retrieval" in out, out
    assert "stopped answering" in err and "Nothing is lost" in err, err
    folder = Path(re.search(r"brainbench log (\S+)", err).group(1))
    assert (folder / "UNLOGGED").is_file()
    assert (folder / "checkpoints" / "model.safetensors").is_file() and (folder / "results.json").is_file()
    results = __import__("json").loads((folder / "results.json").read_text())

    # a fresh run of the same cell does not remove the unlogged results
    again = subprocess.run([brainbench(), *CELL, "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "never reached the MLflow store" in again.stderr, again.stderr
    assert f"brainbench log {folder}" in again.stderr
    assert (folder / "UNLOGGED").is_file()

    # a copy of the folder logged into another store: a new run with every record
    copy = tmp_path / "copy" / folder.name
    shutil.copytree(folder, copy)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = subprocess.run([brainbench(), "log", str(copy), "--tracking-uri", fresh], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "into a new run" in done.stderr, done.stderr
    fresh_client = MlflowClient(tracking_uri=fresh)
    (new_run,) = fresh_client.search_runs([fresh_client.get_experiment_by_name("brainbench").experiment_id])
    assert new_run.info.status == "FINISHED"
    assert new_run.data.params["encoder"] == "litemind" and new_run.data.params["epochs"] == str(EPOCHS)
    assert [m.step for m in fresh_client.get_metric_history(new_run.info.run_id, "train_loss")] == list(
        range(1, EPOCHS + 1))

    # the server back (same store, same address): the same run gets what it missed, and is FINISHED
    server = start_server(tmp_path, port)
    try:
        done = subprocess.run([brainbench(), "log", str(folder)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0 and "into its run" in done.stderr, done.stderr
        assert not (folder / "UNLOGGED").exists()
        client = MlflowClient(tracking_uri=url)
        runs = client.search_runs([client.get_experiment_by_name("brainbench").experiment_id])
        assert [r.info.status for r in runs] == ["FINISHED"]  # one run, closed: none left RUNNING or KILLED
        logged = runs[0]
        history = client.get_metric_history(logged.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))  # every epoch, none twice
        for metric in results["metrics"]:
            assert logged.data.metrics[f"test.{metric['name']}"] == pytest.approx(metric["value"])
        artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
        assert {"results.json", "config.json", "checkpoint"} <= artifacts
        assert "brainbench.killed_note" not in logged.data.tags

        # --log-model, asked for while the store was away: logged now, and MLflow's own loader predicts with it
        import numpy as np

        from brainbench.records.model import load_fitted
        from tests.test_log_model import load_pyfunc

        model = load_pyfunc(url, f"runs:/{logged.info.run_id}/model")
        spec = __import__("json").loads((folder / "mlflow-model.json").read_text())
        voxels = np.random.default_rng(0).normal(size=(4, spec["n_voxels"])).astype(np.float32)
        fitted = load_fitted(spec, folder / spec["checkpoint"], device="cpu")
        np.testing.assert_allclose(model.predict(voxels), fitted.predict(voxels), rtol=1e-6, atol=1e-6)

        # nothing is sent twice
        again = subprocess.run([brainbench(), "log", str(folder)], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0 and "already reached the store" in again.stderr, again.stderr
    finally:
        stop_server(server)


def offline_record(tmp_path, monkeypatch):
    """A journaled record of a run whose store (an HTTP address nobody listens on) refuses from the start."""
    from mlflow.tracking import MlflowClient

    from brainbench.records.journal import JournaledRecord
    from brainbench.records.record import RunRecord

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    gone = f"http://127.0.0.1:{free_port()}"
    folder = tmp_path / "run"
    folder.mkdir()
    header = {"uri": gone, "experiment": "brainbench", "name": "ridge s1 seed0 retrieval",
              "tags": {"brainbench.kind": "cell"}}
    return JournaledRecord(RunRecord(MlflowClient(tracking_uri=gone), "0" * 32), folder, header), folder


def test_an_offline_run_keeps_every_record_and_replays_into_a_new_store(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from brainbench.records.journal import pending
    from brainbench.records.replay import replay

    record, folder = offline_record(tmp_path, monkeypatch)
    outside = tmp_path / "figure.txt"  # an artifact outside the run folder is copied in, so replay finds it
    outside.write_text("a figure")
    record.log_params({"encoder": "ridge", "alpha": 10.0})
    for epoch in (1, 2, 3):
        record.log_metrics({"train_loss": 1.0 / epoch}, step=epoch)
    record.log_artifact(outside, "figures")
    record.log_dict({"top1": 0.5}, "results.json")
    record.finish("FINISHED")
    assert record.offline and pending(folder)
    outside.unlink()

    store = f"sqlite:///{tmp_path / 'new.db'}"
    done = replay(folder, store)
    assert done["new_run"] and done["replayed"] == 6 and done["status"] == "FINISHED"
    assert not pending(folder)
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(done["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "ridge s1 seed0 retrieval"
    assert run.data.params == {"encoder": "ridge", "alpha": "10.0"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")] == pytest.approx([1, 0.5, 1 / 3])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {"figures/0-figure.txt"}
    assert run.data.tags["brainbench.kind"] == "cell"


def test_a_journal_cut_short_by_a_kill_replays_and_a_damaged_one_is_named(tmp_path, monkeypatch):
    from brainbench.errors import BrainbenchError
    from brainbench.records.journal import JOURNAL
    from brainbench.records.replay import replay

    record, folder = offline_record(tmp_path, monkeypatch)
    record.log_params({"encoder": "ridge"})
    record.log_metrics({"train_loss": 2.0}, step=1)
    journal = folder / JOURNAL
    journal.write_text(journal.read_text() + '{"call": "log_metr')  # the process died mid-line
    done = replay(folder, f"sqlite:///{tmp_path / 'a.db'}")
    assert done["replayed"] == 2 and done["status"] == "KILLED"  # it never ended: closed as killed

    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    (folder / "UNLOGGED").write_text("again")
    with pytest.raises(BrainbenchError, match=rf"{JOURNAL}, line 2: not a JSON record"):
        replay(folder, f"sqlite:///{tmp_path / 'b.db'}")


def test_log_on_a_folder_without_records(tmp_path):
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home")}
    done = subprocess.run([brainbench(), "log", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no run folder with unlogged records" in done.stderr, done.stderr
    done = subprocess.run([brainbench(), "log", str(tmp_path / "nope")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "no such folder" in done.stderr, done.stderr


def test_matrix_whose_server_stops_is_logged_and_resumed_later(tmp_path):
    """A matrix loses its server in its first cell: that cell's results are kept, the next cell fails fast,
    the parent says what to do; after `brainbench log` and `--resume` every run is FINISHED, none twice."""
    import sqlite3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home")}
    command = [brainbench(), *CELL, "--seed", "0", "--seed", "1", "--tracking-uri", url]
    server = start_server(tmp_path, port)
    try:
        run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        deadline = time.time() + 600
        while time.time() < deadline:  # the first cell has logged two epochs: the server goes
            time.sleep(0.3)
            try:
                with sqlite3.connect(tmp_path / "server.db", timeout=5) as con:
                    epochs = con.execute("select count(*) from metrics where key = 'train_loss'").fetchone()[0]
            except sqlite3.Error:
                epochs = 0
            if epochs >= 2:
                break
        stop_server(server)
        out, _ = run.communicate(timeout=900)
    finally:
        stop_server(server)
    assert run.returncode == 2, out
    assert "Nothing is lost" in out and "seed1 FAILED" in out and "--resume" in out, out

    server = start_server(tmp_path, port)
    try:
        logged = subprocess.run([brainbench(), "log"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)
        assert logged.returncode == 0 and "into its run" in logged.stderr, logged.stderr
        resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=900)
        assert resumed.returncode == 0, resumed.stderr
        assert "ran 1, skipped 1 (finished before), failed 0" in resumed.stdout, resumed.stdout
    finally:
        stop_server(server)
    with sqlite3.connect(tmp_path / "server.db") as con:
        runs = con.execute("select name, status from runs").fetchall()
    assert sorted(status for _, status in runs) == ["FINISHED"] * 3, runs  # parent + two cells, none RUNNING
