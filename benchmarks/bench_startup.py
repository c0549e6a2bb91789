"""CLI start-up cost: wall time of `brainbench --help` against `python -c pass` (the floor).

    python benchmarks/bench_startup.py [--repeats 15]

Prints medians, the ratio, and which heavy modules (if any) the CLI import pulls in.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "mlflow", "open_clip", "faiss", "ray", "h5py", "numpy")


def median_seconds(command: list[str], repeats: int) -> float:
    subprocess.run(command, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cli = shutil.which("brainbench")
    help_cmd = [cli, "--help"] if cli else [sys.executable, "-m", "brainbench.cli.app", "--help"]
    floor = median_seconds([sys.executable, "-c", "pass"], args.repeats)
    cli_time = median_seconds(help_cmd, args.repeats)
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from brainbench.cli.app import build_app; build_app(); "
         f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    print(f"python -c pass      : {floor * 1000:7.1f} ms (median of {args.repeats})")
    print(f"brainbench --help   : {cli_time * 1000:7.1f} ms (median of {args.repeats})")
    print(f"ratio               : {cli_time / floor:7.2f}x the bare interpreter")
    print(f"heavy modules loaded: {probe.stdout.strip() or 'none'}")


if __name__ == "__main__":
    main()
