"""MLflow's own server with one page added: ``/brainbench``, the landing page ``brainbench ui`` prints.

Registered as an MLflow server app (entry point group ``mlflow.app``, name ``brainbench``), so
``mlflow server --app-name brainbench`` runs MLflow's unchanged app, its store and artifact handling included,
plus this page on the same origin: only a page of that origin can write the runs table's layout into
localStorage (see brainbench/ui_view.py). Used by ``brainbench ui``; runs in the server process.
"""

from __future__ import annotations

import os
from typing import Any

#: Environment of the server process: the store and experiment the landing page describes.
STORE_ENV = "BRAINBENCH_UI_STORE"
EXPERIMENT_ENV = "BRAINBENCH_UI_EXPERIMENT"
LANDING_PATH = "/brainbench"


def landing() -> Any:
    """The landing page of the configured experiment, read fresh from the store on every visit."""
    from mlflow.tracking import MlflowClient

    from brainbench.records.store import DEFAULT_EXPERIMENT
    from brainbench.ui_view import landing_page, read_view

    uri = os.environ.get(STORE_ENV) or os.environ.get("MLFLOW_TRACKING_URI")
    experiment = os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    try:
        experiment_id, layout = read_view(MlflowClient(tracking_uri=uri), experiment)
    except LookupError as exc:  # (body, status, headers): Flask makes the response, no flask import here
        return f"brainbench: {exc} ({uri}); run `brainbench run ...` first\n", 404, {"Content-Type": "text/plain"}
    return landing_page(experiment_id, layout), 200, {"Content-Type": "text/html", "Cache-Control": "no-store"}


def create_app() -> Any:
    """MLflow's server app (FastAPI around its Flask app) with the landing page added to the Flask app."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    if "brainbench_landing" not in flask_app.view_functions:
        flask_app.add_url_rule(LANDING_PATH, "brainbench_landing", landing)
    return create_fastapi_app(flask_app)
