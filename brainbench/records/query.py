"""Runs read back from MLflow as plain values, for ``--resume``, ``brainbench compare`` and the report; and a
matrix parent's status and tags changed on resume."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from brainbench.records.busy import RetryingClient
from brainbench.records.record import RunRecord
from brainbench.records.store import open_client
from brainbench.records.tracker import Tracker

KIND_TAG = "brainbench.kind"
MATRIX_TAG = "brainbench.matrix_id"
CELL_KEY_TAG = "brainbench.cell_key"
PARENT_TAG = "mlflow.parentRunId"


@dataclass
class RunView:
    """A run read back from MLflow, as plain Python values."""

    run_id: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get(PARENT_TAG)

    @property
    def cell_key(self) -> str | None:
        return self.tags.get(CELL_KEY_TAG) or self.params.get("cell_key")


def _view(run: Any) -> RunView:
    return RunView(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        end_time=run.info.end_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
    )


def search(
    tracker: Tracker, filter_string: str = "", order_by: list[str] | None = None, limit: int | None = None
) -> list[RunView]:
    """Runs of the tracker's experiment matching an MLflow filter, newest first by default."""
    client = tracker.client
    order = order_by or ["attributes.start_time DESC"]
    views: list[RunView] = []
    token = None
    while True:
        page = client.search_runs(
            [tracker.experiment_id],
            filter_string=filter_string,
            order_by=order,
            max_results=min(limit or 1000, 1000),
            page_token=token,
        )
        views.extend(_view(run) for run in page)
        token = page.token
        if not token or (limit is not None and len(views) >= limit):
            return views[:limit] if limit is not None else views


def experiment_exists(tracking_uri: str, name: str) -> bool:
    client = RetryingClient(open_client(tracking_uri))
    return client.get_experiment_by_name(name) is not None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def find_run(client: Any, run_id: str) -> Any | None:
    """The MLflow run ``run_id`` of the store ``client`` reads, or None when the store has no such run."""
    try:
        return client.get_run(run_id)
    except Exception as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def get_run(tracker: Tracker, run_id: str) -> RunView | None:
    run = find_run(tracker.client, run_id)
    return None if run is None else _view(run)


def matrix_parents(tracker: Tracker, matrix_id: str | None = None) -> list[RunView]:
    """Parent (matrix) runs, newest first; only those of one matrix when ``matrix_id`` is given."""
    clauses = [f"tags.`{KIND_TAG}` = 'matrix'"]
    if matrix_id:
        clauses.append(f"tags.`{MATRIX_TAG}` = {_quote(matrix_id)}")
    return search(tracker, " and ".join(clauses))


def cell_runs(tracker: Tracker) -> list[RunView]:
    return search(tracker, f"tags.`{KIND_TAG}` = 'cell'")


def children(tracker: Tracker, parent_run_id: str) -> list[RunView]:
    return search(tracker, f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)}")


def per_item_outcomes(tracker: Tracker, run_id: str) -> dict[str, Any] | None:
    """A run's per-item outcomes (the ``per_item.json`` artifact), or None when it has none."""
    import os
    import tempfile

    from brainbench.constants import PER_ITEM_FILE

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per run on the terminal
    try:
        names = {item.path for item in tracker.client.list_artifacts(run_id)}
        if PER_ITEM_FILE not in names:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = tracker.client.download_artifacts(run_id, PER_ITEM_FILE, folder)
            with open(path) as handle:
                record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "outcomes" in record and "stimulus_ids" in record else None


def finished_cell_keys(tracker: Tracker, parent_run_id: str) -> set[str]:
    return {
        run.cell_key for run in children(tracker, parent_run_id) if run.status == "FINISHED" and run.cell_key
    }


def set_status(tracker: Tracker, run_id: str, status: str) -> None:
    """RUNNING reopens a run (resume); FINISHED, FAILED or KILLED close it."""
    if status == "RUNNING":
        tracker.client.update_run(run_id, status="RUNNING")
    else:
        tracker.client.set_terminated(run_id, status=status)


def set_tags(tracker: Tracker, run_id: str, tags: dict[str, Any]) -> None:
    RunRecord(tracker.client, run_id).set_tags(tags)  # the one coercion of tag values (records.record.as_text)
