"""Matrices end to end with a tiny real plugin: parent/child runs, failures, resume, parallel workers."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from brainbench.errors import BrainbenchError
from brainbench.matrix.execute import LaunchOptions, run_matrix
from brainbench.matrix.spec import expand, parse_spec
from brainbench.plugins import reset_plugins
from tests.conftest import write_dist

# A real plugin package (entry point + module) so that spawned workers and Ray workers find it too.
TINY_PLUGIN = """
import os
import time
from pathlib import Path

import numpy as np

from brainbench import hookimpl
from brainbench.interfaces import Dataset, Encoder, FittedEncoder, MetricSpec, Target, Task, Trials

N_VOXELS, DIM = 24, 6


def embedding(ids):
    return np.stack([np.random.default_rng(1000 + int(i)).normal(size=DIM) for i in ids]).astype(np.float32)


class TinyData(Dataset):
    name = "tiny-data"
    synthetic = True
    default_target = "tiny-target"

    def __init__(self, root=None, **options):
        pass

    def subjects(self):
        return [1, 2]

    def n_voxels(self, subject):
        return N_VOXELS

    def trials(self, subject, split):
        weights = np.random.default_rng(subject).normal(size=(DIM, N_VOXELS))
        ids = np.repeat(np.arange(30) if split == "train" else np.arange(30, 40), 2)
        noise_rng = np.random.default_rng(10 * subject + (split == "test"))
        noise = noise_rng.normal(scale=1.5, size=(len(ids), N_VOXELS))
        return Trials((embedding(ids) @ weights + noise).astype(np.float32), ids)


class TinyTarget(Target):
    name = "tiny-target"
    shape = (DIM,)

    def embed(self, dataset, stimulus_ids):
        return embedding(stimulus_ids)


class Fitted(FittedEncoder):
    def __init__(self, weights):
        self.weights = weights
        self.n_parameters = int(weights.size)
        self.history = []

    def predict(self, voxels, batch_size=256):
        return (voxels @ self.weights).astype(np.float32)

    def save(self, path):
        path = Path(str(path) + ".npy")
        np.save(path, self.weights)
        return path


class TinyRidge(Encoder):
    name = "tiny-ridge"

    def __init__(self, alpha=1.0, sleep=0.0, fail=False, **options):
        super().__init__(alpha=alpha, sleep=sleep, fail=fail, **options)

    def fit(self, data, settings, reporter):
        counter = os.environ.get("TINY_INTERRUPT_FILE")
        if counter:  # count fits in a file; Ctrl-C arrives during the Nth
            path = Path(counter)
            count = int(path.read_text()) + 1 if path.exists() else 1
            path.write_text(str(count))
            if count == int(os.environ["TINY_INTERRUPT_AT"]):
                raise KeyboardInterrupt
        if self.options["fail"]:
            raise RuntimeError("tiny encoder was told to fail")
        time.sleep(float(self.options["sleep"]))
        x, y = data.fit_voxels.astype(np.float64), data.fit_targets.astype(np.float64)
        weights = np.linalg.solve(x.T @ x + float(self.options["alpha"]) * np.eye(x.shape[1]), x.T @ y)
        reporter.epoch_end(1, {"train_mse": float(np.mean((x @ weights - y) ** 2))})
        return Fitted(weights)


class TinyTask(Task):
    name = "tiny-task"
    default_dataset = "tiny-data"
    metrics = (MetricSpec("top1", True), MetricSpec("mse", False))

    def evaluate(self, ctx):
        p = ctx.predictions / np.linalg.norm(ctx.predictions, axis=1, keepdims=True)
        t = ctx.targets / np.linalg.norm(ctx.targets, axis=1, keepdims=True)
        top1 = float(np.mean((p @ t.T).argmax(axis=1) == np.arange(len(p))))
        mse = float(np.mean((ctx.predictions - ctx.targets) ** 2))
        return [self.result("top1", top1), self.result("mse", mse)]


@hookimpl
def register_encoders(register):
    register("tiny-ridge", TinyRidge, description="closed-form ridge for tests")


@hookimpl
def register_datasets(register):
    register("tiny-data", TinyData)


@hookimpl
def register_targets(register):
    register("tiny-target", lambda **o: TinyTarget())


@hookimpl
def register_tasks(register):
    register("tiny-task", TinyTask)
"""

SPEC = """
name = "tiny"
[defaults]
task = "tiny-task"
encoder = "tiny-ridge"
device = "cpu"
[axes]
subject = [1, 2]
seed = [0, 1]
"encoder_options.alpha" = [1.0, 100.0]
"""


@pytest.fixture
def tiny_plugin(tmp_path, monkeypatch):
    """The tiny plugin installed in a site folder on sys.path and on PYTHONPATH (for worker processes)."""
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "bb-tiny", "bb_tiny", TINY_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    reset_plugins()
    yield site
    sys.modules.pop("bb_tiny", None)
    reset_plugins()


@pytest.fixture(scope="session")
def template_store(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store made once: creating tables takes seconds, copying does not."""
    from brainbench.records.query import experiment_exists

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    experiment_exists(f"sqlite:///{path}", "brainbench")
    return path


@pytest.fixture
def store_uri(tmp_path, template_store) -> str:
    shutil.copy(template_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def tracker_for(uri: str, experiment: str = "brainbench"):
    from brainbench.records.tracker import SafeTracker

    return SafeTracker(uri, experiment)


def run_spec(text: str, uri: str, resume: bool = False, **launch) -> object:
    spec = parse_spec(text, "tiny.toml")
    lines: list[str] = []
    report = run_matrix(
        spec,
        expand(spec),
        uri,
        "brainbench",
        resume,
        LaunchOptions(system_metrics=False, **launch),
        echo=lines.append,
    )
    report.lines = lines  # type: ignore[attr-defined]
    return report


def metrics_by_key(uri: str, parent_run_id: str) -> dict[str, dict[str, float]]:
    from brainbench.records.query import children

    return {
        run.cell_key: {k: v for k, v in run.metrics.items() if k.startswith("test.")}
        for run in children(tracker_for(uri), parent_run_id)
        if run.status == "FINISHED"
    }


def dataset_inputs(client, run_id: str) -> list[tuple[str, str, str, str]]:
    """(name, digest, context, subject) of each dataset input of a run, as the UI's Dataset column shows."""
    import json

    found = []
    for item in client.get_run(run_id).inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in item.tags}.get("mlflow.data.context")
        subject = json.loads(item.dataset.profile)["subject"]
        found.append((item.dataset.name, item.dataset.digest, context, str(subject)))
    return found


def test_local_matrix_records_parent_children_and_a_failed_cell(tiny_plugin, tmp_path, store_uri):
    from brainbench.records.query import children, get_run

    uri = store_uri
    text = (
        SPEC + '[[overrides]]\nmatch = { subject = 2, "encoder_options.alpha" = 100.0, seed = 1 }\n'
        'set = { "encoder_options.fail" = true }\n'
    )
    report = run_spec(text, uri)
    assert (report.n_cells, report.ran, report.skipped, report.failed) == (8, 7, 0, 1)
    tracker = tracker_for(uri)
    parent = get_run(tracker, report.parent_run_id)
    assert parent.status == "FAILED" and parent.tags["brainbench.kind"] == "matrix"
    assert parent.params["matrix.n_cells"] == "8"
    runs = children(tracker, report.parent_run_id)
    assert len(runs) == 8 and {r.tags["mlflow.parentRunId"] for r in runs} == {report.parent_run_id}
    failed = [r for r in runs if r.status == "FAILED"]
    assert len(failed) == 1 and "told to fail" in failed[0].tags["brainbench.error"]
    assert failed[0].params["subject"] == "2" and failed[0].params["encoder.fail"] == "true"
    finished = [r for r in runs if r.status == "FINISHED"]
    assert all(r.params["encoder"] == "tiny-ridge" and "test.top1" in r.metrics for r in finished)
    assert {r.cell_key for r in runs} == {cell.config.key for cell in expand(parse_spec(text))}
    # The spec and the summary live in the parent.
    client = tracker.client
    artifacts = {a.path for a in client.list_artifacts(report.parent_run_id)}
    assert {"matrix.toml", "summary", "figures"} <= artifacts
    figures = {a.path for a in client.list_artifacts(report.parent_run_id, "figures")}
    assert (
        any(p.endswith("by_encoder_subject.png") for p in figures)
        and "figures/train_seconds_per_cell.png" in figures
    )
    spec_file = client.download_artifacts(report.parent_run_id, "matrix.toml", str(tmp_path))
    assert Path(spec_file).read_text() == text
    summary = Path(client.download_artifacts(report.parent_run_id, "summary/summary.csv", str(tmp_path)))
    assert summary.read_text().count("\n") == 1 + 4  # header + (2 subjects x 2 alphas), seeds averaged
    # The parent's Dataset column: every split its cells read, once (2 subjects x train/test, 8 cells).
    parent_inputs = dataset_inputs(client, report.parent_run_id)
    union = {item for run in runs for item in dataset_inputs(client, run.run_id)}
    assert len(parent_inputs) == len(set(parent_inputs)) == 4 and set(parent_inputs) == union
    assert {(context, subject) for _, _, context, subject in parent_inputs} == {
        (context, subject) for context in ("train", "test") for subject in ("1", "2")
    }


def test_resume_after_interrupt_reruns_only_unfinished_cells(tiny_plugin, tmp_path, monkeypatch, store_uri):
    from brainbench.records.query import children, get_run, matrix_parents

    uri = store_uri
    monkeypatch.setenv("TINY_INTERRUPT_FILE", str(tmp_path / "fits"))
    monkeypatch.setenv("TINY_INTERRUPT_AT", "4")
    with pytest.raises(KeyboardInterrupt):
        run_spec(SPEC, uri)
    tracker = tracker_for(uri)
    (first,) = matrix_parents(tracker)
    assert first.status == "KILLED"
    statuses = sorted(r.status for r in children(tracker, first.run_id))
    assert statuses == ["FINISHED"] * 3 + ["KILLED"]

    monkeypatch.delenv("TINY_INTERRUPT_FILE")
    report = run_spec(SPEC, uri, resume=True)
    assert report.parent_run_id == first.run_id and report.resumed
    assert (report.ran, report.skipped, report.failed) == (5, 3, 0)
    assert get_run(tracker, first.run_id).status == "FINISHED"
    assert len(metrics_by_key(uri, first.run_id)) == 8

    again = run_spec(SPEC, uri, resume=True)  # nothing left to do
    assert (again.ran, again.skipped, again.parent_run_id) == (0, 8, first.run_id)
    parent_inputs = dataset_inputs(tracker.client, first.run_id)  # resumed twice: each split still once
    assert len(parent_inputs) == len(set(parent_inputs)) == 4
    fresh = run_spec(SPEC, uri)  # without --resume: a new parent, every cell again
    assert fresh.parent_run_id != first.run_id and fresh.ran == 8
    assert metrics_by_key(uri, fresh.parent_run_id) == metrics_by_key(uri, first.run_id)  # deterministic


def test_parallel_cpu_workers_share_one_sqlite_store(tiny_plugin, store_uri):
    from brainbench.records.query import children

    uri = store_uri
    small = SPEC.replace('"encoder_options.alpha" = [1.0, 100.0]', '"encoder_options.alpha" = [10.0]')
    sequential = run_spec(small, uri)
    text = small.replace('device = "cpu"', 'device = "cpu"\n"encoder_options.sleep" = 0.5')
    parallel = run_spec(text, uri, launcher="local-gpus", workers=2, threads_per_worker=1)
    assert (parallel.ran, parallel.failed) == (4, 0)
    runs = children(tracker_for(uri), parallel.parent_run_id)
    workers = {r.tags["brainbench.worker"] for r in runs}
    assert len(workers) == 2 and all(w.startswith("cpu-worker-") for w in workers)
    # Two cells were open at the same time: the processes really ran side by side.
    spans = sorted((r.start_time, r.end_time) for r in runs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    # Same metrics as the sequential run, cell for cell (sleep is not part of the science but is in the key).
    seq = {
        r.params["subject"] + r.params["seed"] + r.params["encoder.alpha"]: r.metrics["test.top1"]
        for r in children(tracker_for(uri), sequential.parent_run_id)
    }
    par = {
        r.params["subject"] + r.params["seed"] + r.params["encoder.alpha"]: r.metrics["test.top1"]
        for r in runs
    }
    assert seq == par


def test_unknown_encoder_stops_before_any_run(tiny_plugin, store_uri):
    from brainbench.records.query import experiment_exists

    with pytest.raises(BrainbenchError, match="unknown encoder.*'nope'"):
        run_spec(SPEC.replace('encoder = "tiny-ridge"', 'encoder = "nope"'), store_uri)
    assert not experiment_exists(store_uri, "brainbench")


def test_one_liner_runs_a_matrix_with_a_generated_spec(tiny_plugin, store_uri, tmp_path):
    from typer.testing import CliRunner

    from brainbench.cli.app import build_app
    from brainbench.matrix.spec import parse_spec
    from brainbench.records.query import children, matrix_parents

    args = ["run", "tiny-ridge", "--task", "tiny-task", "--device", "cpu", "--seed", "0", "--seed", "1"]
    result = CliRunner().invoke(build_app(), [*args, "--tracking-uri", store_uri], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ran 2, skipped 0 (finished before), failed 0" in result.output
    tracker = tracker_for(store_uri)
    (parent,) = matrix_parents(tracker)
    runs = children(tracker, parent.run_id)
    assert sorted(r.params["seed"] for r in runs) == ["0", "1"]
    spec_file = tracker.client.download_artifacts(parent.run_id, "matrix.toml", str(tmp_path))
    spec = parse_spec(Path(spec_file).read_text())
    assert spec.axes == {"seed": [0, 1]} and spec.defaults["encoder"] == "tiny-ridge"
    assert {cell.config.key for cell in expand(spec)} == {r.cell_key for r in runs}
