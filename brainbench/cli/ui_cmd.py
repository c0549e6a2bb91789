"""``brainbench ui``: MLflow's UI on the run store, opened on the runs table with the results as columns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import typer

#: MLflow's server imports a lot; on a busy machine it can take a minute to answer.
START_SECONDS = 300.0


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_up(process: subprocess.Popen[bytes], url: str, seconds: float = START_SECONDS) -> None:
    from brainbench.errors import BrainbenchError

    deadline = time.monotonic() + seconds
    while not answers(url):
        if process.poll() is not None:
            raise BrainbenchError(f"mlflow server exited with code {process.returncode} before answering {url}")
        if time.monotonic() > deadline:
            raise BrainbenchError(f"mlflow server did not answer {url} within {seconds:.0f} s")
        time.sleep(0.5)


def server_command(uri: str, host: str, port: int) -> list[str]:
    """MLflow's own server, one worker, with brainbench's landing page (brainbench/mlflow_app.py)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
            "--port", str(port), "--workers", "1", "--app-name", "brainbench"]


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui(
        tracking_uri: str | None = typer.Option(
            None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
            help="MLflow store (default sqlite:///mlflow.db in the working directory, as `brainbench run` uses).",
        ),
        experiment: str = typer.Option("brainbench", "--experiment", help="MLflow experiment to show."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (this machine only by default)."),
        port: int = typer.Option(0, "--port", help="Port to listen on (0: a free one)."),
        open_browser: bool = typer.Option(False, "--open", help="Also open the URL in the default web browser."),
    ) -> None:
        """Start MLflow's UI on the run store and print the URL of its runs table: test metrics, encoder,
        task, subject and seed as columns, matrix parent runs expanded to their cells (not MLflow 3's GenAI
        view). Runs until Ctrl-C."""
        from brainbench.errors import BrainbenchError
        from brainbench.mlflow_app import EXPERIMENT_ENV, LANDING_PATH, STORE_ENV
        from brainbench.records.store import resolve_tracking_uri, sqlite_path

        uri = resolve_tracking_uri(tracking_uri)
        if uri.startswith(("http://", "https://")):
            raise BrainbenchError(
                f"{uri} is a tracking server already: open it in a browser; `brainbench ui` serves a local store "
                "(its landing page needs `mlflow server --app-name brainbench` on that server)"
            )
        database = sqlite_path(uri)
        if database is not None:
            database = database.resolve()
            if not database.is_file():
                raise BrainbenchError(
                    f"no MLflow store at {database}: run `brainbench run ...` here first, or pass --tracking-uri"
                )
            uri = f"sqlite:///{database}"  # absolute: the server may resolve paths from elsewhere
        if port == 0:
            port = free_port(host)
        base = f"http://{host}:{port}"
        env = {**os.environ, STORE_ENV: uri, EXPERIMENT_ENV: experiment,
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # a plain SIGTERM would leave the server running

        signal.signal(signal.SIGTERM, stop)
        log = Path(os.environ.get("BRAINBENCH_UI_LOG", os.devnull))
        with open(log, "ab") as sink:
            server = subprocess.Popen(server_command(uri, host, port), env=env, stdout=sink, stderr=sink)
        try:
            typer.echo(f"starting mlflow server on {base} for {uri} ...", err=True)
            wait_until_up(server, base + "/health")
            landing = base + LANDING_PATH
            if not answers(landing, timeout=60):
                raise BrainbenchError(
                    f"{landing} did not answer: is experiment {experiment!r} in {uri}? (`brainbench run` creates it)"
                )
            typer.echo(f"brainbench runs table: {landing}")
            typer.echo(
                "(opens MLflow's runs table in model-training mode with the test metrics, encoder, task, subject "
                "and seed as columns and matrix parents expanded; Ctrl-C stops the server)", err=True
            )
            if open_browser:
                import webbrowser

                webbrowser.open(landing)
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
