"""Screenshots of the MLflow UI on a brainbench store: the runs view, the parent (matrix) run, a compare page.

    python benchmarks/mlflow_screenshots.py --tracking-uri sqlite:///mlflow.db --out docs/images

Starts ``mlflow server`` on 127.0.0.1 only (a free port), finds the latest matrix of the experiment, and
takes the pictures with headless Chromium (Debian's ``chromium`` package: ``apt-get install chromium``).
Nothing leaves the machine. Prints what each picture shows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, seconds: float = 600.0) -> None:  # slow to start on a busy machine
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"mlflow server at {url} did not become healthy in {seconds:.0f}s")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: apt-get install chromium")


def shoot(browser: str, url: str, path: Path, size: str = "1800,1000", budget_ms: int = 30000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={size}", f"--virtual-time-budget={budget_ms}",
             f"--screenshot={path}", url],
            check=True, capture_output=True, timeout=180,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="brainbench")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.tracking_uri}")
    eid = experiment.experiment_id
    parents = client.search_runs([eid], "tags.`brainbench.kind` = 'matrix'", order_by=["attributes.start_time DESC"])
    if not parents:
        raise SystemExit("no matrix run to show")
    parent = parents[0]
    children = client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    args.out.mkdir(parents=True, exist_ok=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(base)
        browser = chromium()
        ids = json.dumps([r.info.run_id for r in children[:6]])
        pages = {
            "mlflow_runs.png": (f"{base}/#/experiments/{eid}/runs", "the experiment's runs table (the default "
                                "view, not GenAI traces): run names start with encoder, subject, seed; test.* "
                                "metrics and dataset inputs in columns; the matrix parent with its children"),
            "mlflow_parent_run.png": (f"{base}/#/experiments/{eid}/runs/{parent.info.run_id}",
                                      "the parent (matrix) run: summary metrics per encoder row and metric, "
                                      "its params and tags"),
            "mlflow_compare.png": (f"{base}/#/compare-runs?runs={urllib.parse.quote(ids)}"
                                   f"&experiments={urllib.parse.quote(json.dumps([eid]))}",
                                   "the compare page of the cells: settings and test metrics side by side"),
        }
        for name, (url, what) in pages.items():
            shoot(browser, url, args.out / name)
            print(f"{args.out / name}: {what}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
