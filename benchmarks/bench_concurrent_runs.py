"""Concurrent `brainbench run` processes in one directory: how many trials lose a run, and how each run ends.

    python benchmarks/bench_concurrent_runs.py [--trials 10] [--processes 6] [--pythonpath DIR]
        [--existing-store] [--stagger SECONDS]
    python benchmarks/bench_concurrent_runs.py --trials 5 --processes 4,8     # the figures of issue 22

Each trial starts ``--processes`` copies of ``brainbench run ridge --task retrieval`` (tiny simulated NSD) at the
same moment on a fresh BRAINBENCH_HOME and a fresh SQLite store, one working directory: half of them the same cell
(seed 0), the others one cell each (seeds 1, 2, ...). A trial fails when any process exits non-zero, any run is not
FINISHED in the store or lacks its artifacts, or two runs of one cell disagree on a metric. ``--existing-store``
makes the store's tables first; ``--stagger S`` starts each process after a random delay in [0, S) seconds (as runs
started by hand in several terminals), so that one run starts while another of the same cell is writing its files.
Each trial also prints how its runs ended: FINISHED in the store, offline (the store was declared lost: the
run kept its records in its folder, ``UNLOGGED``) or other (FAILED, left RUNNING, missing). ``--processes``
takes a comma-separated list (one set of trials per count).
``--pythonpath DIR`` runs another checkout (DIR and DIR/plugins go first on PYTHONPATH), e.g. the code before a
change, checked out with ``git worktree add /tmp/old COMMIT``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ARTIFACTS = ("results.json", "config.json", "metrics.md")


def cli() -> list[str]:
    script = Path(sys.executable).with_name("brainbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "brainbench.cli.app"]


def seeds_for(processes: int) -> list[int]:
    """Half the processes (at least two) run seed 0; the rest one other seed each."""
    same = max(2, processes // 2)
    return [0] * same + list(range(1, processes - same + 1))


def run_trial(
    folder: Path,
    seeds: list[int],
    pythonpath: str | None,
    existing_store: bool = False,
    stagger: float = 0.0,
    timeout: float = 900,
) -> tuple[list[str], dict[str, int]]:
    """Start one process per seed at once; return the problems found (empty: the trial passed) and how the
    runs ended (FINISHED / offline / other)."""
    env = {**os.environ, "BRAINBENCH_HOME": str(folder / "home"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, str(Path(pythonpath) / "plugins")])
    store = folder / "mlflow.db"
    if existing_store:  # the schema made beforehand: only the runs' own files can collide
        subprocess.run([sys.executable, "-c", "import sys; from mlflow.tracking import MlflowClient; "
                        "MlflowClient(sys.argv[1]).search_experiments()", f"sqlite:///{store}"],
                       cwd=folder, env=env, check=True, capture_output=True)
    command = [*cli(), "run", "ridge", "--task", "retrieval", "--dataset-opt", "scale=tiny",
               "--tracking-uri", f"sqlite:///{store}"]
    delays = sorted(random.uniform(0, stagger) for _ in seeds) if stagger else [0.0] * len(seeds)
    began = time.perf_counter()
    processes = []
    for seed, delay in zip(seeds, delays, strict=True):
        time.sleep(max(0.0, delay - (time.perf_counter() - began)))
        processes.append(subprocess.Popen([*command, "--seed", str(seed)], cwd=folder, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    problems = []
    for seed, process in zip(seeds, processes, strict=True):
        output, _ = process.communicate(timeout=timeout)
        if process.returncode != 0:
            last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
            problems.append(f"seed {seed}: exit {process.returncode}: {last[0][:200]}")
    problems += check_store(store, len(seeds))
    return problems, endings(store, folder / "home", len(seeds))


def endings(store: Path, home: Path, expected: int) -> dict[str, int]:
    """FINISHED runs in the store, runs that went offline (their folder keeps UNLOGGED records), and the rest."""
    finished = 0
    if store.exists():
        with sqlite3.connect(store) as con:
            finished = con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    offline = sum(1 for _ in (home / "runs").rglob("UNLOGGED")) if (home / "runs").is_dir() else 0
    return {"FINISHED": finished, "offline": offline, "other": max(0, expected - finished - offline)}


def check_store(store: Path, expected: int) -> list[str]:
    if not store.exists():
        return ["no store"]
    with sqlite3.connect(store) as con:
        runs = con.execute("select run_uuid, status, artifact_uri from runs").fetchall()
        rows = con.execute(
            "select m.run_uuid, m.key, m.value, p.value from latest_metrics m "
            "join params p on p.run_uuid = m.run_uuid and p.key = 'cell_key' where m.key like 'test.%'"
        ).fetchall()
    problems = []
    finished = [run for run in runs if run[1] == "FINISHED"]
    if len(finished) != expected:
        problems.append(f"{len(finished)} of {expected} runs FINISHED ({sorted(r[1] for r in runs)})")
    for run_id, _, uri in finished:
        folder = Path(uri.removeprefix("file://"))
        missing = [name for name in ARTIFACTS if not (folder / name).is_file()]
        if missing or not any((folder / "checkpoint").glob("model*")):
            problems.append(f"run {run_id}: artifacts missing ({missing or 'checkpoint'})")
    values: dict[tuple[str, str], set[float]] = defaultdict(set)
    for _, key, value, cell in rows:
        values[(cell, key)].add(value)
    differing = sorted(f"{cell}:{key}" for (cell, key), seen in values.items() if len(seen) > 1)
    if differing:
        problems.append(f"runs of one cell disagree on {', '.join(differing[:3])}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--processes", default="6", help="processes per trial; a comma-separated list runs each")
    parser.add_argument("--pythonpath", help="checkout to run instead of the installed one")
    parser.add_argument("--existing-store", action="store_true", help="create the store's schema first")
    parser.add_argument("--stagger", type=float, default=0.0, help="random start delays in [0, S) seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start delays")
    parser.add_argument("--keep", action="store_true", help="keep the trial folders")
    args = parser.parse_args()
    random.seed(args.seed)
    summary = []
    for processes in (int(count) for count in str(args.processes).split(",")):
        summary.append(trials(processes, args))
    print("\nprocesses | trials | failed trials | runs FINISHED | offline | other | seconds")
    for line in summary:
        print(line)


def trials(processes: int, args: argparse.Namespace) -> str:
    seeds = seeds_for(processes)
    store = "existing" if args.existing_store else "new"
    stagger = f", starts spread over {args.stagger:g} s" if args.stagger else ", started together"
    print(f"{args.trials} trials x {processes} processes (seeds {seeds}){stagger}, {store} store, "
          f"code: {args.pythonpath or 'installed'}")
    failed = 0
    totals = {"FINISHED": 0, "offline": 0, "other": 0}
    started = time.perf_counter()
    for trial in range(1, args.trials + 1):
        folder = Path(tempfile.mkdtemp(prefix=f"bb-concurrent-{trial}-"))
        began = time.perf_counter()
        problems, ended = run_trial(folder, seeds, args.pythonpath, args.existing_store, args.stagger)
        failed += bool(problems)
        totals = {key: totals[key] + ended[key] for key in totals}
        print(f"N={processes} trial {trial:2d}: {'FAILED' if problems else 'ok'}: FINISHED {ended['FINISHED']}, "
              f"offline {ended['offline']}, other {ended['other']} ({time.perf_counter() - began:.0f} s)"
              + "".join(f"\n    {p}" for p in problems), flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - started
    print(f"failures: {failed} of {args.trials} trials x {processes} processes ({seconds:.0f} s)")
    runs = args.trials * processes
    return (f"{processes:9d} | {args.trials:6d} | {failed:13d} | {totals['FINISHED']:6d} of {runs:<4d}"
            f" | {totals['offline']:7d} | {totals['other']:5d} | {seconds:7.0f}")


if __name__ == "__main__":
    main()
