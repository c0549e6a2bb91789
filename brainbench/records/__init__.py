"""What a run records in MLflow and reads back. mlflow is imported here (inside functions, so the CLI starts
fast; at the top of ``mlflow_pyfunc.py``, a file only MLflow loads) and nowhere else in brainbench but
``brainbench/mlflow_app.py``, the server app of ``brainbench ui``.

- ``store``   where a store is (URIs made absolute, a server checked before training) and opening it (the
              first-open lock of a new SQLite file, bounded HTTP retries)
- ``busy``    a busy store (SQLite's lock, HTTP 429/503) waited for, not declared lost
- ``liveness`` who owns a run (host, pid, boot, PID namespace, heartbeat), and whether that process is gone
- ``record``  what a run sends: params, metrics, tags, artifacts, dataset inputs, system metrics
- ``journal`` every record also kept in the run folder, so a store lost mid-run loses nothing
- ``journal_check`` a journal read back, every line checked (nothing in it is trusted)
- ``tracker`` the experiment and a run's life: created, taken over, closed FINISHED/FAILED/KILLED
- ``query``   runs read back for ``--resume``, ``compare`` and the report
- ``model``   ``--log-model``: a fitted encoder as an MLflow model whose files are hash-checked on load
- ``replay``  ``brainbench log``: a checked journal sent to its own run, never to a closed or foreign one

Each module imports only those above it; nothing here imports the CLI, the runner or the matrix engine.
"""
