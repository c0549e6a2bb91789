"""How many processes can write to one MLflow SQLite store at once: failures, throughput, write latency.

    python benchmarks/bench_store_writers.py [--writers 1,2,4,8,16] [--batches 100] [--tracking-uri URI]

For each K, K writer processes open one fresh store (its tables made by whichever comes first, under
brainbench's lock), wait at a barrier, then each creates a run and logs ``--batches`` metric batches (5 metrics
each, as a training loop logs per epoch) through brainbench's ``RunRecord``, and ends the run. Two clients are
measured: ``plain`` (``brainbench.records.tracker.Tracker``) and ``retrying`` (``SafeTracker``, which the CLI and
the launchers use: it retries while SQLite reports "database is locked"). A writer fails when any call
raises. Reported per K: failed writers, batches written per second (all writers together, from the barrier to
the last writer's end), and the median / 95th percentile / max latency of one batch.
``--tracking-uri http://host:5000`` measures an ``mlflow server`` instead (no fresh store then).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

WRITER = textwrap.dedent(
    """
    import json, sys, time, traceback
    from pathlib import Path
    uri, go, batches, client_kind = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    from brainbench.records.tracker import SafeTracker, Tracker
    result = {"ok": False, "latencies": [], "error": None}
    try:
        tracker = (SafeTracker if client_kind == "retrying" else Tracker)(uri, "store-writers")
        tracker.experiment_id  # opens the store (and makes its tables when it is new)
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.005)
        result["start"] = time.time()
        with tracker.run("writer") as record:
            for step in range(batches):
                began = time.perf_counter()
                record.log_metrics({f"m{i}": step * 0.1 + i for i in range(5)}, step=step)
                result["latencies"].append(time.perf_counter() - began)
        result["end"] = time.time()
        result["ok"] = True
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    print(json.dumps(result), flush=True)
    import os
    os._exit(0)  # skip the interpreter's final clean-up (seconds of gc after importing mlflow)
    """
)


def measure(uri: str, writers: int, batches: int, client: str, folder: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri}
    go = folder / f"go-{client}-{writers}"
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, str(go), str(batches), client], cwd=folder, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(writers)
    ]
    for process in processes:  # the barrier: every writer has imported mlflow and opened the store
        line = process.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            break
    go.touch()
    results = []
    for process in processes:
        output, _ = process.communicate(timeout=900)
        lines = [line for line in output.splitlines() if line.startswith("{")]
        results.append(json.loads(lines[-1]) if lines else {"ok": False, "latencies": [], "error": "no result"})
    done = [r for r in results if r["ok"]]
    latencies = sorted(x for r in results for x in r["latencies"])
    span = (max(r["end"] for r in done) - min(r["start"] for r in done)) if done else float("nan")
    return {
        "writers": writers,
        "client": client,
        "failed": len(results) - len(done),
        "errors": sorted({r["error"] for r in results if r["error"]}),
        "batches_per_s": sum(len(r["latencies"]) for r in done) / span if done else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", default="1,2,4,8,16", help="comma-separated K values")
    parser.add_argument("--batches", type=int, default=100, help="metric batches per writer")
    parser.add_argument("--clients", default="plain,retrying")
    parser.add_argument("--tracking-uri", help="measure this store instead of a fresh SQLite file per K")
    args = parser.parse_args()
    counts = [int(k) for k in args.writers.split(",")]
    print(f"{args.batches} batches of 5 metrics per writer; {os.cpu_count()} CPUs; "
          f"store: {args.tracking_uri or 'a fresh SQLite file per K and client'}")
    print("| writers | client | failed writers | batches/s (all) | p50 ms | p95 ms | max ms |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    errors = set()
    with tempfile.TemporaryDirectory() as scratch:
        for client in args.clients.split(","):
            for k in counts:
                folder = Path(scratch) / f"{client}-{k}"
                folder.mkdir()
                uri = args.tracking_uri or f"sqlite:///{folder / 'mlflow.db'}"
                row = measure(uri, k, args.batches, client, folder)
                errors.update(row["errors"])
                print(f"| {k} | {client} | {row['failed']} of {k} | {row['batches_per_s']:.0f} | "
                      f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['max_ms']:.0f} |", flush=True)
    for error in sorted(errors):
        print(f"error seen: {error}")


if __name__ == "__main__":
    main()
