"""What a run sends to MLflow: params, metrics, tags, artifacts, dataset inputs (``RunRecord``, behind the
``Record`` protocol), its name, its code version, and the machine's metrics while it runs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from brainbench.records.liveness import HEARTBEAT_TAG

MAX_PARAM_LENGTH = 6000


def as_text(value: Any) -> str:
    """A value as MLflow stores params and tags: a string as it is, anything else as JSON (read back as data)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values become strings MLflow accepts."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = as_text(value)[:MAX_PARAM_LENGTH]
    return flat


@runtime_checkable
class Record(Protocol):
    """What a run records into (``RunRecord``; ``journal.JournaledRecord`` keeps a copy of each call)."""

    run_id: str

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, data: dict[str, Any], name: str) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def log_table(self, data: dict[str, list[Any]], name: str) -> None: ...
    def log_dataset(self, name: str, digest: str, source: str, context: str, profile: dict[str, Any]) -> None: ...


class RunRecord:
    """A started MLflow run; thin wrapper so callers never touch mlflow directly."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        tags = []
        if step is not None:  # an epoch ended: the owner is alive (see records/liveness.py)
            from mlflow.entities import RunTag

            tags.append(RunTag(HEARTBEAT_TAG, f"{now / 1000:.0f}"))
        if items or tags:
            self._client.log_batch(self.run_id, metrics=items, tags=tags)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, as_text(value))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self._client.log_dict(self.run_id, data, name)

    def log_text(self, text: str, name: str) -> None:
        self._client.log_text(self.run_id, text, name)

    def log_table(self, data: dict[str, list[Any]], name: str) -> None:
        """A table artifact (columns -> values) the MLflow UI shows in its artifact and evaluation views."""
        self._client.log_table(self.run_id, data=data, artifact_file=name)

    def log_dataset(self, name: str, digest: str, source: str, context: str, profile: dict[str, Any]) -> None:
        """An input the run used, shown in the runs table's Dataset column (``context``: train / test)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
            profile=json.dumps(profile, default=str),
        )
        self._client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])


def run_name(encoder: str, subject: Any, seed: Any, task: str, options: dict[str, Any] | None = None) -> str:
    """What tells sibling runs apart comes first, so the UI's narrow name column shows it: ``litemind s1 seed0``
    (with the encoder options the run sets: ``ridge alpha=10000.0 s1 seed0``)."""
    settings = "".join(f" {k}={v}" for k, v in sorted((options or {}).items()))
    return f"{encoder}{settings} s{subject} seed{seed} {task}"


def code_version() -> str | None:
    """The git commit of the installed brainbench source tree, when it is a git checkout (else None)."""
    import subprocess

    import brainbench

    root = Path(brainbench.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


class SystemMetrics:
    """CPU, memory, disk, network (and GPU with pynvml) metrics of one run, sampled in a thread.

    MLflow's SystemMetricsMonitor works with a client-created run when given its id and tracking URI. Without
    psutil it cannot sample, and this does nothing.
    """

    def __init__(self, tracking_uri: str, run_id: str, interval: float = 5.0) -> None:
        self._monitor: Any = None
        try:
            import psutil  # noqa: F401
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            return
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        try:
            self._monitor = SystemMetricsMonitor(
                run_id, sampling_interval=interval, tracking_uri=tracking_uri
            )
        except Exception:  # monitoring is a nicety; it never stops a cell
            self._monitor = None

    @property
    def active(self) -> bool:
        return self._monitor is not None

    def __enter__(self) -> SystemMetrics:
        if self._monitor is not None:
            self._monitor.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception:
                pass
