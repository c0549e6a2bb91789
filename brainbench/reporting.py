"""Reporters: where training progress goes (terminal, MLflow, nowhere)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _NullProgress:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass


class QuietReporter:
    """Reports nothing; keeps the epoch history (for tests and background workers)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.messages: list[str] = []

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[_NullProgress]:
        yield _NullProgress()

    def info(self, message: str) -> None:
        self.messages.append(message)


class RichReporter:
    """Progress bars and one line per epoch on a rich console."""

    def __init__(self, console: Any | None = None, every: int | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.every = every

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.every is None or epoch % self.every == 0:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self.console.print(f"[dim]epoch {epoch}[/dim]  {shown}")

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Any]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        ]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(description, total=total, status="")
            yield _RichHandle(bar, task_id)

    def info(self, message: str) -> None:
        self.console.print(message)


class _RichHandle:
    def __init__(self, bar: Any, task_id: Any) -> None:
        self._bar = bar
        self._task_id = task_id

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task_id, n)

    def update(self, **fields: Any) -> None:
        status = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self._bar.update(self._task_id, status=status)


class TrackingReporter:
    """Passes everything to ``inner`` and logs each epoch's metrics to an MLflow run record."""

    def __init__(self, inner: Any, record: Any) -> None:
        self.inner = inner
        self.record = record

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.inner.epoch_end(epoch, metrics)
        self.record.log_metrics(metrics, step=epoch)

    def progress(self, description: str, total: int | None) -> Any:
        return self.inner.progress(description, total)

    def info(self, message: str) -> None:
        self.inner.info(message)
