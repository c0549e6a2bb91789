"""`brainbench index serve` under abuse: memory, time and connections the server gives to bad clients.

    python benchmarks/bench_index_server.py [--brainbench PATH] [--body-mb 200] [--half-sent 300] [--wait 60]

Starts the server (the console script at PATH, so /work/main/.venv/bin/brainbench measures the old one) on
127.0.0.1 over a small flat index (built with this checkout's code; the format is the same) and prints:
- the server's RSS growth (peak, sampled every 20 ms) while a client streams a ``--body-mb`` MB body, and
  the status it got;
- seconds until a valid query with ``num_images=1e6`` is answered, and the status;
- after ``--half-sent`` clients each send part of a request and stop, then ``--wait`` seconds: the server's
  thread count and its established connections;
- whether a good query is still answered at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from brainbench_laion.index import build_index
from brainbench_laion.testing import clustered, write_gallery

DIM = 64


def start(cli: str, index: Path, folder: Path) -> tuple[subprocess.Popen, int]:
    out = (folder / "stdout.txt").open("w")
    command = [cli, "index", "serve", str(index), "--port", "0", "--indice-name", "bench"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env=env)
    for _ in range(1200):
        found = re.search(r"http://127\.0\.0\.1:(\d+)/knn-service", (folder / "stdout.txt").read_text())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            raise SystemExit("the server exited before serving")
        time.sleep(0.1)
    raise SystemExit("the server did not start")


def body(num_images: object = 5) -> bytes:
    return json.dumps({"embedding_input": list(np.ones(DIM) / 8), "indice_name": "bench",
                       "num_images": num_images}).encode()


def request(port: int, payload: bytes, timeout: float = 600) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("POST", "/knn-service", payload, {"Content-Type": "application/json"})
    status = connection.getresponse().status
    connection.close()
    return status


def big_body(port: int, server: psutil.Process, megabytes: int) -> tuple[float, str]:
    """Peak RSS growth (MB) while streaming ``megabytes`` MB, and what the client got back."""
    baseline = server.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, server.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = megabytes * 1024 * 1024
    outcome = "?"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(b"POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        chunk = b'{"embedding_input": [' + b"0.0, " * 200_000
        sent = 0
        try:
            while sent < size:
                part = chunk[: size - sent]
                sock.sendall(part)
                sent += len(part)
        except OSError as exc:
            outcome = f"connection ended after {sent / 1e6:.0f} MB sent ({type(exc).__name__})"
        try:
            response = http.client.HTTPResponse(sock)
            response.begin()
            outcome = f"HTTP {response.status} after {sent / 1e6:.0f} MB sent"
        except (OSError, http.client.HTTPException) as exc:
            outcome += f"; no response ({type(exc).__name__})"
    time.sleep(0.5)
    done.set()
    sampler.join()
    return (peak - baseline) / 1e6, outcome


def half_sent(port: int, server: psutil.Process, count: int, wait: float) -> tuple[int, int, int]:
    """(threads, established connections) of the server ``wait`` s after ``count`` clients stopped mid-request."""
    threads_before = server.num_threads()
    sockets = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"embed" if index % 2
                     else b"POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Le")
        sockets.append(sock)
    time.sleep(wait)
    threads = server.num_threads()
    established = sum(c.status == psutil.CONN_ESTABLISHED for c in server.net_connections(kind="tcp"))
    for sock in sockets:
        sock.close()
    return threads_before, threads, established


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brainbench", default=shutil.which("brainbench") or "brainbench")
    parser.add_argument("--body-mb", type=int, default=200)
    parser.add_argument("--half-sent", type=int, default=300)
    parser.add_argument("--wait", type=float, default=60.0, help="Seconds after the half-sent requests.")
    parser.add_argument("--rows", type=int, default=20_000, help="Gallery size.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bb-serve-") as scratch:
        folder = Path(scratch)
        write_gallery(folder / "src", clustered(args.rows, DIM, seed=0), shard_rows=10_000)
        build_index(folder / "src", folder / "idx", "flat", progress=False)
        process, port = start(args.brainbench, folder / "idx", folder)
        server = psutil.Process(process.pid)
        try:
            print(f"server: {args.brainbench} (pid {process.pid}), gallery {args.rows} x {DIM}")
            print(f"good query: HTTP {request(port, body())}")
            growth, outcome = big_body(port, server, args.body_mb)
            print(f"{args.body_mb} MB body: RSS +{growth:.1f} MB peak; {outcome}")
            started = time.perf_counter()
            status = request(port, body(1_000_000))
            print(f"num_images=1e6: HTTP {status} in {time.perf_counter() - started:.2f} s")
            before, threads, established = half_sent(port, server, args.half_sent, args.wait)
            print(f"{args.half_sent} half-sent requests, {args.wait:g} s later: {threads} threads (before: {before}), "
                  f"{established} established connections")
            try:
                print(f"good query at the end: HTTP {request(port, body(), timeout=60)}")
            except OSError as exc:
                print(f"good query at the end: failed ({exc})")
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
