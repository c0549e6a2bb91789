"""The demos on an idle machine and beside a CPU-burning neighbour, with brainbench's thread choice and without.

    python benchmarks/bench_busy_machine.py                       # the demos as the README runs them
    python benchmarks/bench_busy_machine.py --epochs 3 --repeats 1  # a quick look (small size)

Each demo (`brainbench run litemind --task retrieval`, `--task laion`, `brainbench run ridge --task retrieval`)
runs as the installed command in a subprocess, first on the machine as it is ("idle"), then beside one
busy-looping process per core ("busy"), each time with brainbench's thread choice (``BRAINBENCH_THREADS=auto``,
"new") and with torch's and BLAS's own defaults (``BRAINBENCH_THREADS=default``, "old": one thread per core
whatever else runs). Wall time and CPU time (``resource.getrusage`` of the demo's process) are measured; the
table gives each as a ratio to the same demo's idle run with the same setting, and the busy CPU of "new"
against "old". On a machine others are using, "idle" is only as idle as they leave it: compare ratios measured
in one run of this script, not absolute seconds across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMOS = {
    "litemind-retrieval": ["litemind", "--task", "retrieval"],
    "litemind-laion": ["litemind", "--task", "laion"],
    "ridge-retrieval": ["ridge", "--task", "retrieval"],
}
SETTINGS = {"new": "auto", "old": "default"}
BURNER = "while True:\n    pass\n"


def brainbench() -> str:
    script = Path(sys.executable).with_name("brainbench")
    return str(script) if script.exists() else shutil.which("brainbench") or "brainbench"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_demo(args: list[str], threads: str, folder: Path, home: Path) -> dict[str, float]:
    """One demo run: wall seconds, CPU seconds (its process and children), exit status."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                             "OPENBLAS_NUM_THREADS", "MLFLOW_TRACKING_URI")}
    env.update({"BRAINBENCH_THREADS": threads, "BRAINBENCH_HOME": str(home)})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([brainbench(), "run", *args, "--device", "cpu"], cwd=folder, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # before the neighbours are reaped
    if done.returncode != 0:
        raise SystemExit(f"brainbench run {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    threads_used = next((line.split("CPU threads:")[1].strip() for line in done.stderr.splitlines()
                         if "CPU threads:" in line), "?")
    return {"wall": wall, "cpu": cpu, "threads": threads_used}


class Neighbour:
    """One busy-looping process per core, started before the demo and stopped after it."""

    def __init__(self, n: int, settle: float) -> None:
        self.n, self.settle = n, settle
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Neighbour:
        self.processes = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(self.n)]
        time.sleep(self.settle)  # the neighbour is there before the demo starts, as on a shared server
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", nargs="+", default=list(DEMOS), choices=list(DEMOS))
    parser.add_argument("--epochs", type=int, default=None, help="train neural demos for this many epochs "
                        "(default: the demo's own recipe)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each demo per condition (median kept)")
    parser.add_argument("--burners", type=int, default=cores(), help="busy-looping processes (default: one per core)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds the neighbour runs before each demo")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as scratch:
        folder, home = Path(scratch), Path(scratch) / "home"
        for demo in args.demos:
            command = [*DEMOS[demo], *(["--epochs", str(args.epochs)] if args.epochs and demo != "ridge-retrieval"
                                       else [])]
            run_demo(command, "auto", folder, home)  # warm-up: simulated data and caches written, not timed
            results[demo] = {}
            for setting, value in SETTINGS.items():
                for condition in ("idle", "busy"):
                    runs = []
                    for _ in range(args.repeats):
                        if condition == "busy":
                            with Neighbour(args.burners, args.settle):
                                runs.append(run_demo(command, value, folder, home))
                        else:
                            runs.append(run_demo(command, value, folder, home))
                    runs.sort(key=lambda r: r["wall"])
                    results[demo][f"{setting}-{condition}"] = runs[len(runs) // 2]
                    figures = runs[len(runs) // 2]
                    print(f"{demo:20s} {setting}-{condition}: wall {figures['wall']:7.1f} s  cpu "
                          f"{figures['cpu']:7.1f} s  threads {figures['threads']}", flush=True)
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {cores()} cores; neighbour: {args.burners} "
          f"busy-looping processes")
    print(f"{'demo':20s} {'setting':8s} {'idle wall':>10s} {'idle cpu':>9s} {'busy wall':>10s} {'busy cpu':>9s} "
          f"{'wall x':>7s} {'cpu x':>6s}")
    for demo, table in results.items():
        for setting in SETTINGS:
            idle, busy = table[f"{setting}-idle"], table[f"{setting}-busy"]
            print(f"{demo:20s} {setting:8s} {idle['wall']:9.1f}s {idle['cpu']:8.1f}s {busy['wall']:9.1f}s "
                  f"{busy['cpu']:8.1f}s {busy['wall'] / idle['wall']:6.2f}x {busy['cpu'] / idle['cpu']:5.2f}x")
        old, new = table["old-busy"], table["new-busy"]
        print(f"{demo:20s} busy: new/old wall {new['wall'] / old['wall']:.2f}x, cpu {new['cpu'] / old['cpu']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
