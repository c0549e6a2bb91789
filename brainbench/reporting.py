"""Reporters: where training progress goes (terminal, a matrix cell's lines, MLflow, nowhere).

A trainer moves a progress handle step by step (``advance``) and names the epoch and loss on it (``update``);
reporters that show progress add the time left (ETA) from the handle's own clock to each epoch's line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def duration(seconds: float) -> str:
    """3.2 -> "3 s", 95 -> "1 min 35 s", 7300 -> "2 h 01 min"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class StepClock:
    """Steps done of a total and the time they took: the time left, at the pace so far."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.completed = 0
        self.resumed = 0  # steps done before this process started (a resumed run), not timed here
        self.started = time.perf_counter()
        self.fields: dict[str, Any] = {}

    def advance(self, n: int = 1) -> None:
        if self.completed == 0 and n > 1:  # a jump before any step: the steps of a resumed run
            self.resumed = n
            self.started = time.perf_counter()
        self.completed += n

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float | None:
        timed = self.completed - self.resumed
        if not self.total or timed <= 0:
            return None
        return self.elapsed() / timed * max(0, self.total - self.completed)

    def pace(self) -> str:
        """"epoch 3/30 ... ETA 1 min 05 s" pieces: elapsed and remaining time."""
        eta = self.eta()
        left = f", ETA {duration(eta)}" if eta is not None else ""
        return f"{duration(self.elapsed())} elapsed{left}"


class _NullProgress(StepClock):
    def __init__(self) -> None:
        super().__init__(None)


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


def epoch_line(epoch: int, metrics: dict[str, float], clock: StepClock | None) -> str:
    """"epoch 3/30  train_loss=0.52  lr=0.003  | 12 s elapsed, ETA 1 min 05 s"."""
    label = clock.fields.get("epoch", epoch) if clock is not None else epoch
    shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    pace = f"  | {clock.pace()}" if clock is not None else ""
    return f"epoch {label}  {shown}{pace}"


class RichReporter:
    """A live progress bar (epoch and loss beside it) and one line per epoch with the time left."""

    def __init__(self, console: Any | None = None, every: int | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.every = every
        self._clock: StepClock | None = None

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.every is None or epoch % self.every == 0:
            self.console.print(epoch_line(epoch, metrics, self._clock), highlight=False)

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
            handle = _RichHandle(bar, task_id, total)
            self._clock = handle
            try:
                yield handle
            finally:
                self._clock = None

    def info(self, message: str) -> None:
        self.console.print(message)


class _RichHandle(StepClock):
    def __init__(self, bar: Any, task_id: Any, total: int | None) -> None:
        super().__init__(total)
        self._bar = bar
        self._task_id = task_id

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self._bar.advance(self._task_id, n)

    def update(self, **fields: Any) -> None:
        super().update(**fields)
        status = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items())
        self._bar.update(self._task_id, status=status)


class LineReporter:
    """Progress of one cell among many as plain lines, each led by the cell's name: what it is about to do
    (with the time it expects), then its epochs (loss, time left), at most one line per ``every`` seconds
    besides the first and the last. Cells running side by side (matrix workers) print without clobbering
    each other's output, as a live bar would."""

    def __init__(self, label: str, console: Any | None = None, every: float = 10.0) -> None:
        from rich.console import Console

        self.label = label
        self.console = console or Console(stderr=True, highlight=False)
        self.every = every
        self._clock: StepClock | None = None
        self._last_line = -float("inf")

    def _print(self, text: str) -> None:
        from rich.markup import escape

        # soft_wrap: one record per line in a log, however narrow the terminal
        self.console.print(f"[bold]\\[{escape(self.label)}][/bold] {text}", highlight=False, soft_wrap=True)

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        clock = self._clock
        last = clock is not None and clock.total is not None and clock.completed >= clock.total
        now = time.perf_counter()
        if clock is None or epoch == 1 or last or now - self._last_line >= self.every:
            self._last_line = now
            self._print(epoch_line(epoch, metrics, clock))

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[StepClock]:
        self._clock = StepClock(total)
        self._last_line = time.perf_counter()
        try:
            yield self._clock
        finally:
            if self._clock.total and self._clock.completed:
                self._print(f"{description}: {self._clock.completed}/{self._clock.total} steps in "
                            f"{duration(self._clock.elapsed())}")
            self._clock = None

    def info(self, message: str) -> None:
        self._print(message)


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
