"""`brainbench ui` as a user meets it: a real store, the installed command, MLflow's server, a real Chromium
with a fresh profile opening the printed URL; the runs table must show a run's metric value with no click."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brainbench.ui_view import landing_page, storage_key, view_state
from tests.conftest import run_cli

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


class _Run:
    """The fields of an MLflow run the view reads."""

    def __init__(self, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
        self.info = type("Info", (), {"run_id": run_id})()
        self.data = type("Data", (), {"metrics": metrics, "tags": tags})()


def test_view_state_expands_parents_and_shows_test_metrics_and_settings() -> None:
    runs = [
        _Run("parent", {"ridge/s1/top1": 0.5}, {"brainbench.kind": "matrix"}),
        _Run("child", {"test.a_top1_300way": 0.4, "test.a_top1_300way.ci_low": 0.3, "test.b_full": 0.1},
             {"mlflow.parentRunId": "parent"}),
        _Run("single", {"test.a_top1_300way": 0.2}, {}),
    ]
    state = view_state(runs)
    assert state["runsExpanded"] == {"parent": True}
    assert state["selectedColumns"][:4] == [f"params.`{p}`" for p in ("encoder", "task", "subject", "seed")]
    assert "metrics.`test.a_top1_300way`" in state["selectedColumns"]
    assert "metrics.`test.b_full`" in state["selectedColumns"]
    assert not any("ci_low" in column for column in state["selectedColumns"])
    page = landing_page("7", state)
    assert storage_key("7") in page.replace('\\"', '"')
    assert "/#/experiments/7/runs?workflowType=machine_learning" in page


def read_url(process: subprocess.Popen[str], seconds: float = 300) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line and process.poll() is not None:
            raise AssertionError(f"brainbench ui exited ({process.returncode}): {process.stderr.read()}")  # type: ignore[union-attr]
        found = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError("brainbench ui printed no URL")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_fresh_browser_opens_on_the_runs_table_with_metric_values(tmp_path: Path) -> None:
    done = run_cli("run", "ridge", "--task", "retrieval", "--seed", "0", "--seed", "1", "--dataset-opt", "scale=tiny",
                   "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("brainbench")
    children = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
    assert len(children) == 2
    value = children[0].data.metrics["test.image_to_fmri_top1_full"]

    ui = subprocess.Popen([sys.executable, "-m", "brainbench.cli.app", "ui"], cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        url = read_url(ui)
        assert url.startswith("http://127.0.0.1:")
        dom = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'fresh-profile'}", "--window-size=1800,1000",
             "--virtual-time-budget=30000", "--dump-dom", url],
            capture_output=True, text=True, timeout=300,
        ).stdout
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "Run Name" in text and "test.image_to_fmri_top1_full" in text  # the runs table, the metric column
    assert repr(value) in text or f"{value:.4f}" in text, text[-3000:]  # a run's value, no click
    for child in children:  # the matrix parent is expanded: its cells are rows
        assert child.info.run_name in text
    assert re.search(r"\bencoder\b", text) and "ridge" in text


def test_ui_refuses_a_missing_store(tmp_path: Path) -> None:
    done = run_cli("ui", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "no MLflow store" in done.stderr and "mlflow.db" in done.stderr
