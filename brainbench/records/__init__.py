"""What a run records in MLflow and reads back; the only package that imports mlflow (inside functions, so the
CLI starts fast; ``mlflow_pyfunc.py`` at its top, a file only MLflow loads).

- ``store``   where a store is (URIs made absolute, a server checked before training) and opening it (the
              first-open lock of a new SQLite file, bounded HTTP retries)
- ``busy``    a busy store (SQLite's lock, HTTP 429/503) waited for, not declared lost
- ``record``  what a run sends: params, metrics, tags, artifacts, dataset inputs, system metrics
- ``journal`` every record also kept in the run folder, so a store lost mid-run loses nothing
- ``tracker`` the experiment and a run's life: created, taken over, closed FINISHED/FAILED/KILLED
- ``query``   runs read back for ``--resume``, ``compare`` and the report
- ``model``   ``--log-model``: a fitted encoder as an MLflow model whose files are hash-checked on load
- ``replay``  ``brainbench log``: a journal checked line by line, then sent to its own run

Each module imports only those above it; nothing here imports the CLI, the runner or the matrix engine.
"""
