"""Run third-party plugin code (an import, a hook) so that it cannot hang, print into, or end the CLI.

The call runs in a daemon thread that the CLI waits on for at most ``BRAINBENCH_PLUGIN_IMPORT_TIMEOUT``
seconds (default 5; 0 waits without limit). While it runs, ``sys.stdout`` and ``sys.stderr`` point at a
buffer, so a ``print()`` at import cannot corrupt ``brainbench compare -f json``; every exception, including
``SystemExit`` and other ``BaseException``s, is caught and returned instead of propagating.

Trade-offs (why a thread and not a subprocess): a subprocess per plugin would cost an interpreter start on
every command and could not hand the imported module back. A thread can be abandoned but not killed, so:
- a call that times out keeps running in the background; whatever it later writes to stdout/stderr is
  dropped (the streams are wrapped once a thread is abandoned), and ``exit_now_if_abandoned`` ends the
  process with ``os._exit`` after the command so a hung import never delays the exit (atexit handlers are
  skipped in that case; brainbench closes its own runs explicitly, before that point);
- a hung import holds its own module's import lock: the CLI never imports that module again, but a
  plugin that hangs while importing a module brainbench itself needs later would block that import;
- code that must run in the main thread at import (``signal.signal``) fails there and the plugin is skipped;
- output written straight to file descriptor 1/2 by C code is not captured (only Python's streams are).
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

DEFAULT_TIMEOUT = 5.0
TIMEOUT_ENV = "BRAINBENCH_PLUGIN_IMPORT_TIMEOUT"

_abandoned: list[threading.Thread] = []
_real_stderr: list[Any] = []  # the CLI's own stderr while a guarded call has sys.stderr captured


def cli_stderr() -> Any:
    """The CLI's stderr, even inside a guarded call (brainbench's own warnings must not be captured)."""
    return _real_stderr[-1] if _real_stderr else sys.stderr


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    output: str = ""  # what the call wrote to stdout/stderr

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


def timeout_seconds() -> float | None:
    """The time limit from the environment; None means no limit. A bad value warns (once) and uses the default."""
    return _parse_timeout(os.environ.get(TIMEOUT_ENV, "").strip())


@cache
def _parse_timeout(raw: str) -> float | None:
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value != value or value < 0:  # NaN or negative
        sys.stderr.write(f"Warning: {TIMEOUT_ENV}={raw!r} is not a number of seconds >= 0; "
                         f"using {DEFAULT_TIMEOUT:g}\n")
        return DEFAULT_TIMEOUT
    return None if value == 0 else value


class _Muted:
    """A stream that drops what abandoned threads write and passes everything else through."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread() in _abandoned:
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def call(function: Callable[[], Any], timeout: float | None, name: str = "plugin") -> Outcome:
    """``function()`` in a daemon thread, waited on for ``timeout`` seconds, its output captured.

    A KeyboardInterrupt from the user (delivered to the main thread while it waits) propagates as usual.
    """
    outcome = Outcome()
    captured = io.StringIO()

    def target() -> None:
        try:
            outcome.value = function()
        except BaseException as exc:  # noqa: BLE001 - SystemExit at import is a broken plugin, not an exit
            outcome.error = exc

    thread = threading.Thread(target=target, name=f"brainbench-{name}", daemon=True)
    saved = sys.stdout, sys.stderr
    _real_stderr.append(saved[1])
    sys.stdout = sys.stderr = captured
    try:
        thread.start()
        thread.join(timeout)
    finally:
        sys.stdout, sys.stderr = saved
        _real_stderr.pop()
    outcome.output = captured.getvalue()
    if thread.is_alive():
        outcome.timed_out = True
        _abandon(thread)
    return outcome


def _abandon(thread: threading.Thread) -> None:
    _abandoned.append(thread)
    if not isinstance(sys.stdout, _Muted):
        sys.stdout = _Muted(sys.stdout)
    if not isinstance(sys.stderr, _Muted):
        sys.stderr = _Muted(sys.stderr)


def abandoned_alive() -> bool:
    return any(thread.is_alive() for thread in _abandoned)


def exit_now_if_abandoned(code: int) -> None:
    """End the process at once when a timed-out plugin call is still running (see the module's notes)."""
    if not abandoned_alive():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
