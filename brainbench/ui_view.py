"""The MLflow runs view ``brainbench ui`` opens on: which columns, which rows expanded, as the UI stores it.

MLflow 3.x's experiment page keeps its table layout (chosen columns, their order and widths, expanded parent
runs) in the browser's localStorage under ``MLflowLocalStorage-1.1-ExperimentPage-["<experiment id>"]-
ReactComponentState``, and opens on GenAI traces unless the URL says ``workflowType=machine_learning`` (or
localStorage ``mlflow.workflowType_v1`` does). The experiment tag ``mlflow.experimentKind`` does not switch it.
Its "shared view" URL parameter (``viewStateShareKey``) cannot expand parent runs (the UI drops
``runsExpanded`` from shared views), so brainbench serves a landing page on MLflow's own origin that writes this
layout into localStorage and sends the browser on to the runs table (see brainbench/mlflow_app.py).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

#: Params shown as columns: what a reader needs to tell the runs apart.
PARAM_COLUMNS = ("encoder", "task", "subject", "seed")
#: At most this many test metrics as columns (the headline ones first).
MAX_METRIC_COLUMNS = 4
#: Runs read to choose the columns and the parents to expand.
RUNS_READ = 200
WORKFLOW_PARAM = "workflowType=machine_learning"


def storage_key(experiment_id: str) -> str:
    """The localStorage key of an experiment page's saved layout (MLflow 3.x)."""
    return f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([str(experiment_id)])}-ReactComponentState"


def runs_url(experiment_id: str) -> str:
    """The runs table of an experiment, in model-training mode (not GenAI traces), relative to the server."""
    return f"/#/experiments/{experiment_id}/runs?{WORKFLOW_PARAM}"


def test_metrics(runs: list[Any]) -> list[str]:
    """The test metrics the runs report (interval bounds left out), most common first, 300-way ones first."""
    counts = Counter(
        key for run in runs for key in run.data.metrics
        if key.startswith("test.") and not key.endswith((".ci_low", ".ci_high"))
    )
    ranked = sorted(counts, key=lambda k: (-counts[k], "300way" not in k, k))
    return ranked[:MAX_METRIC_COLUMNS]


def matrix_parents(runs: list[Any]) -> list[str]:
    """Run ids of the parent runs among ``runs`` (matrices): these rows are shown expanded."""
    parents = {run.data.tags.get("mlflow.parentRunId") for run in runs} - {None}
    return sorted(run.info.run_id for run in runs if run.info.run_id in parents)


def view_state(runs: list[Any]) -> dict[str, Any]:
    """The experiment page's layout: test metrics and the run-telling params as columns, parents expanded."""
    metrics = test_metrics(runs)
    metric_columns = [f"metrics.`{name}`" for name in metrics]
    param_columns = [f"params.`{name}`" for name in PARAM_COLUMNS]
    selected = [*param_columns, *metric_columns, "attributes.`Dataset`"]
    widths = {"attributes.`Run Name`": 230, **{c: 80 for c in param_columns}, **{c: 200 for c in metric_columns},
              "attributes.`Dataset`": 200}
    return {
        "selectedColumns": selected,
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", *selected],
        "columnWidths": widths,
        "runsExpanded": {run_id: True for run_id in matrix_parents(runs)},
        "runsHiddenMode": "SHOW_ALL",  # MLflow's default hides all but the first 10 rows from its charts
    }


def read_view(client: Any, experiment_name: str) -> tuple[str, dict[str, Any]]:
    """(experiment id, layout) for ``experiment_name`` in the store ``client`` reads."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise LookupError(f"no experiment {experiment_name!r} in this store")
    runs = client.search_runs(
        [experiment.experiment_id], max_results=RUNS_READ, order_by=["attributes.start_time DESC"]
    )
    return experiment.experiment_id, view_state(list(runs))


LANDING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>brainbench runs</title></head>
<body><p>Opening the brainbench runs table&hellip; <a id="go" href="{target}">continue</a></p>
<script>
// Write the runs table's layout where MLflow's experiment page reads it, then open that page.
(function () {{
  var key = {key}, layout = {layout};
  var saved = {{}};
  try {{ saved = JSON.parse(localStorage.getItem(key) || "{{}}") || {{}}; }} catch (e) {{ saved = {{}}; }}
  localStorage.setItem(key, JSON.stringify(Object.assign(saved, layout)));
  localStorage.setItem("mlflow.workflowType_v1", JSON.stringify("machine_learning"));
  // the assistant side panel stays closed (MLflow opens it on a profile's first visit)
  localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
  localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
  window.location.replace({target_js});
}})();
</script></body></html>
"""


def landing_page(experiment_id: str, layout: dict[str, Any]) -> str:
    """The HTML page that stores ``layout`` for ``experiment_id`` and redirects to its runs table."""
    target = runs_url(experiment_id)

    def js(value: Any) -> str:  # JSON is valid JavaScript; keep "</" out of the inline script
        return json.dumps(value).replace("</", "<\\/")

    return LANDING_PAGE.format(
        target=target, key=js(storage_key(experiment_id)), layout=js(layout), target_js=js(target)
    )
