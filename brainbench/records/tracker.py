"""The experiment and a run's life in it: parent (matrix) and child (cell) runs created, taken over by a
resuming process, and closed FINISHED, FAILED or KILLED; runs whose process is gone closed on every open."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brainbench.errors import TrackingError, one_line
from brainbench.records.busy import RetryingClient, retry_busy
from brainbench.records.journal import JOURNAL_TOKEN_TAG, JournaledRecord, StoreOfflineError, new_token
from brainbench.records.liveness import close_orphaned_runs, owner_tags
from brainbench.records.record import Record, RunRecord, as_text
from brainbench.records.store import (
    DEFAULT_EXPERIMENT,
    absolute_uri,
    check_reachable,
    open_client,
    open_sqlite_once,
    resolve_tracking_uri,
    sqlite_path,
)

#: Experiment tag MLflow 3.x reads to choose its view: runs table (classic ML) instead of GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


class Tracker:
    """Creates parent (matrix) and child (cell) runs in one MLflow experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None

    def check(self) -> None:
        check_reachable(self.uri)

    @property
    def client(self) -> Any:
        if self._client is None:

            def open_store() -> None:
                self._client = open_client(self.uri)
                existing = self._client.get_experiment_by_name(self.experiment)
                if existing is None:
                    self._experiment_id = self._create_experiment()
                else:
                    self._experiment_id = existing.experiment_id

            try:
                open_sqlite_once(self.uri, open_store)
            except Exception as exc:  # mlflow raises many types; the user needs one clear line
                self._client = None
                raise TrackingError(f"cannot open MLflow store {self.uri}: {exc}") from exc
            self._close_orphans()
        return self._client

    def _close_orphans(self) -> None:
        """Killed means closed: runs left RUNNING by processes that are gone become KILLED on every start."""
        try:
            closed = close_orphaned_runs(self._client, [self._experiment_id])
        except Exception as exc:  # never let the clean-up stop a run; say so
            print(f"brainbench: could not check for orphaned runs in {self.uri}: {exc}", file=sys.stderr)
            return
        if closed:
            print(
                f"brainbench: marked {len(closed)} run(s) KILLED whose process is gone "
                f"({', '.join(c[:8] for c in closed[:5])}{', ...' if len(closed) > 5 else ''})",
                file=sys.stderr,
            )

    def _create_experiment(self) -> str:
        try:
            # Tagged as a classic (custom model) experiment: MLflow 3 opens it on the runs table, not traces.
            # A SQLite store keeps its artifacts beside it (mlruns/ next to the .db), not in whatever folder the
            # first run happened to start in: a store given by --tracking-uri stays whole and writable.
            db = sqlite_path(self.uri)
            location = (db.expanduser().resolve().parent / "mlruns").as_uri() if db is not None else None
            return self._client.create_experiment(
                self.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except Exception:
            # Another process created it between our lookup and create.
            return self._client.get_experiment_by_name(self.experiment).experiment_id

    def check_writable(self) -> None:
        """Before any training: the home, a SQLite store's folder and a local artifact root can be written."""
        from brainbench.paths import home_folder
        from brainbench.writable import check_run_paths

        db = sqlite_path(self.uri)
        check_run_paths(home_folder(), db, None)  # the store's folder first: opening a new store creates it
        artifact_root = self.client.get_experiment(self.experiment_id).artifact_location
        check_run_paths(None, None, artifact_root)  # the home was checked just above

    @property
    def experiment_id(self) -> str:
        _ = self.client
        assert self._experiment_id is not None
        return self._experiment_id

    @contextmanager
    def run(
        self,
        name: str,
        parent_run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        keep_in: Path | None = None,
    ) -> Iterator[Record]:
        """A run marked FINISHED on success, FAILED on error, KILLED on Ctrl-C.

        With ``keep_in`` (the run's folder) every record is also kept there (records.journal): a store that
        goes away mid-run loses nothing, the run goes on, and ends in a StoreOfflineError that says how to log
        the kept records (``brainbench log FOLDER``).
        """
        client = self.client
        ours = owner_tags()
        all_tags = {"mlflow.runName": name, **ours, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if keep_in is not None:  # what `brainbench log` checks before it writes into this run
            ours[JOURNAL_TOKEN_TAG] = all_tags[JOURNAL_TOKEN_TAG] = new_token()
        all_tags = {key: as_text(value) for key, value in all_tags.items()}
        if run_id is None:
            run = client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            run_id = run.info.run_id
        else:  # an existing run taken over by this process: it is the owner now
            for key, value in ours.items():
                client.set_tag(run_id, key, value)
        record: Any = RunRecord(client, run_id)
        if keep_in is not None:
            header = {"uri": absolute_uri(self.uri), "experiment": self.experiment, "name": name,
                      "work_dir": str(keep_in.resolve()), "tags": all_tags}
            record = JournaledRecord(record, keep_in, header)
        try:
            yield record
        except KeyboardInterrupt:
            self._close(record, "KILLED")
            raise
        except BaseException as exc:
            self._close(record, "FAILED", f"{type(exc).__name__}: {exc}"[:5000])
            raise
        else:
            self._close(record, "FINISHED")
            if getattr(record, "offline", False):
                raise StoreOfflineError(record.offline_message(self.uri))

    def _close(self, record: Any, status: str, error: str | None = None) -> None:
        """End the run in the store; a journaled run that cannot reach it keeps its end in its folder instead."""
        if not isinstance(record, JournaledRecord):
            try:
                if error:
                    self.client.set_tag(record.run_id, "brainbench.error", error)
                self.client.set_terminated(record.run_id, status=status)
            except Exception as exc:  # one clear line instead of a chained traceback
                raise TrackingError(
                    f"the MLflow store {self.uri} stopped answering ({type(exc).__name__}: {one_line(exc)})"
                    f"; run {record.run_id} stays RUNNING until the next brainbench start marks it KILLED. Records "
                    "kept by runs of cells are logged with `brainbench log`; then rerun the same command with "
                    "--resume" + (f" (the run failed with {error[:160]})" if error else "")
                ) from exc
            return
        if error:
            record.set_tags({"brainbench.error": error})
        if not record.offline:
            try:
                self.client.set_terminated(record.run_id, status=status)
            except Exception as exc:  # the store went away at the very end
                record.go_offline(exc)
        record.finish(status)
        if record.offline and status != "FINISHED":
            print(f"brainbench: the run's records are kept in {record.folder}; log them later with: "
                  f"brainbench log {record.folder}", file=sys.stderr)


class SafeTracker(Tracker):
    """A Tracker for concurrent writers: cells running side by side share one SQLite store."""

    @property
    def client(self) -> Any:
        if self._client is None:
            retry_busy(Tracker.client.fget, self)  # type: ignore[attr-defined]
            self._client = RetryingClient(self._client)
        return self._client
