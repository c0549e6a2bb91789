"""MLflow records in a real SQLite store."""

import socket

import pytest

from brainbench.errors import TrackingError
from brainbench.records.record import flatten_params
from brainbench.records.store import check_reachable
from brainbench.records.tracker import Tracker


def test_flatten_params_makes_strings_and_dotted_keys():
    flat = flatten_params({"a": 1, "b": {"c": [1, 2], "d": "x"}, "e": None})
    assert flat == {"a": "1", "b.c": "[1, 2]", "b.d": "x", "e": "null"}


def test_parent_and_child_runs_with_params_metrics_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, experiment="unit")
    artifact = tmp_path / "table.md"
    artifact.write_text("| a |\n")
    with tracker.run("matrix", tags={"brainbench.kind": "matrix"}) as parent:
        with tracker.run("cell", parent_run_id=parent.run_id) as child:
            child.log_params({"encoder": "ridge", "encoder.alphas": [1, 10]})
            child.log_metrics({"val_loss": 2.0}, step=1)
            child.log_metrics({"val_loss": 1.0}, step=2)
            child.log_artifact(artifact, "tables")
            child.log_dict({"x": 1}, "config.json")
    client = tracker.client
    run = client.get_run(child.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["encoder"] == "ridge" and run.data.params["encoder.alphas"] == "[1, 10]"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    history = client.get_metric_history(child.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
    names = {a.path for a in client.list_artifacts(child.run_id)}
    assert {"tables", "config.json"} <= names


def test_failed_run_is_marked_with_its_error(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="unit")
    with pytest.raises(ValueError):
        with tracker.run("cell") as record:
            raise ValueError("bad voxels")
    run = tracker.client.get_run(record.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["brainbench.error"] == "ValueError: bad voxels"


def test_unreachable_server_is_reported_before_training():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TrackingError, match=f"cannot reach MLflow tracking server http://127.0.0.1:{port}"):
        check_reachable(f"http://127.0.0.1:{port}", timeout=2)
