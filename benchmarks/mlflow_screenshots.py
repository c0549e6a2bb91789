"""Screenshots of the MLflow UI on a brainbench store: the first page `brainbench ui` opens, the runs view, the
parent (matrix) run, a compare page.

    python benchmarks/mlflow_screenshots.py --demo --out docs/images
    python benchmarks/mlflow_screenshots.py --tracking-uri sqlite:///mlflow.db --out docs/images

``--demo`` first runs a small matrix into a store of its own (ridge, two penalties x 2 seeds on the simulator,
``log_model = true``: about a minute on a laptop CPU); otherwise the latest matrix of the experiment is shown.
Starts ``mlflow server`` on 127.0.0.1 only (a free port, telemetry off) and drives headless Chromium (Debian's
``chromium`` package: ``apt-get install chromium``) over its DevTools protocol, also bound to 127.0.0.1: the
runs view is shown as a user would set it up (the matrix parent expanded to its child runs, the test metrics
and the settings that differ as columns, the assistant side panel closed), through the UI's own saved view
state. Nothing leaves the machine. Prints what each picture shows.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

WIDTH, HEIGHT = 1800, 1000
DEMO_SPEC = """name = "ridge-variants"
[defaults]
task = "retrieval"
device = "cpu"
log_model = true
[axes]
encoder = ["ridge"]
"encoder_options.alpha" = [1e3, 1e4]
seed = [0, 1]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, seconds: float = 600.0) -> None:  # slow to start on a busy machine
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"mlflow server at {url} did not become healthy in {seconds:.0f}s")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: apt-get install chromium")


# ------------------------------------------------------------------------ Chrome DevTools, stdlib only


class DevTools:
    """A minimal Chrome DevTools Protocol client over a stdlib WebSocket (no websocket package needed)."""

    def __init__(self, ws_url: str, timeout: float = 120.0) -> None:
        url = urllib.parse.urlparse(ws_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            buffer += chunk
        head, self.pending = buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools refused the WebSocket: {head[:200]!r}")
        self.next_id = 0

    def _read(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.pending += chunk
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)  # a client masks every frame
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _receive(self) -> dict:
        message = b""
        while True:
            first, second = self._read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            payload = self._read(n)
            if opcode == 9:  # ping
                self._send(10, payload)
                continue
            if opcode == 8:
                raise ConnectionError("DevTools closed the WebSocket")
            message += payload
            if first & 0x80:
                return json.loads(message)

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self._send(1, json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:  # events arrive in between; the reply carries our id
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, wait_for: str, seconds: float = 120.0) -> None:
        """Load ``url`` and wait until the page shows ``wait_for`` (the UI fetches runs after loading)."""
        self.call("Page.navigate", url=url)
        self.wait_for(wait_for, seconds)

    def wait_for(self, text: str, seconds: float = 120.0) -> None:
        deadline = time.time() + seconds
        probe = f"document.body !== null && document.body.innerText.includes({json.dumps(text)})"
        while True:
            try:
                if self.js(probe):
                    break
            except RuntimeError as exc:  # the page navigated under the probe (a redirect): look again
                if "navigated" not in str(exc):
                    raise
            if time.time() > deadline:
                raise SystemExit(f"the page never showed {text!r} within {seconds:.0f}s")
            time.sleep(0.5)
        time.sleep(2.0)  # let the grid finish its layout

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


def start_browser(browser: str, profile: str) -> tuple[subprocess.Popen[bytes], DevTools]:
    port = free_port()
    process = subprocess.Popen(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-address=127.0.0.1",
         f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                page = next(t for t in json.load(response) if t.get("type") == "page")
            break
        except (OSError, StopIteration, ValueError):
            if process.poll() is not None or time.time() > deadline:
                raise SystemExit(f"{browser} did not open its DevTools port") from None
            time.sleep(0.5)
    tools = DevTools(page["webSocketDebuggerUrl"])
    tools.call("Page.enable")
    tools.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
    return process, tools


# --------------------------------------------------------------------------------------- the runs view


def runs_view_state(saved: dict, parent_id: str, metrics: list[str], params: list[str]) -> dict:
    """The experiment page's saved view (the UI keeps it in localStorage): the parent expanded, the
    dataset, models, chosen metric and param columns shown, wide enough to read the run names."""
    columns = ["attributes.`Dataset`", "attributes.`Models`", *(f"metrics.`{m}`" for m in metrics),
               *(f"params.`{p}`" for p in params)]
    widths = {"attributes.`Run Name`": 330, "attributes.`Dataset`": 250, "attributes.`Models`": 110,
              **{f"metrics.`{m}`": 200 for m in metrics}, **{f"params.`{p}`": 120 for p in params}}
    order = ["attributes.`Run Name`", "runDateAndNestInfo", "attributes.`Dataset`", "duration",
             "attributes.`Models`", *columns[2:]]
    return {**saved, "runsExpanded": {parent_id: True}, "selectedColumns": columns, "columnOrder": order,
            "columnWidths": widths}


def differing_params(children: list) -> list[str]:
    """The settings that tell the cells apart (besides subject and seed, which the names show)."""
    keys = sorted({key for run in children for key in run.data.params} - {"cell_key", "subject", "seed"})
    differ = [key for key in keys if len({run.data.params.get(key) for run in children}) > 1]
    asked = [key for key in differ if not key.startswith("recipe.")]  # what was set, not what it led to
    return (asked or differ)[:3]


def make_demo_store(folder: Path) -> str:
    spec = folder / "ridge-variants.toml"
    spec.write_text(DEMO_SPEC)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    script = Path(sys.executable).with_name("brainbench")
    done = subprocess.run(
        [str(script) if script.exists() else "brainbench", "matrix", "run", str(spec), "--tracking-uri", uri],
        capture_output=True, text=True, cwd=folder, env={**os.environ, "BRAINBENCH_HOME": str(folder / "home")},
    )
    if done.returncode != 0:
        raise SystemExit(f"the demo matrix failed:\n{done.stdout}\n{done.stderr}")
    return uri


def shoot_brainbench_ui(uri: str, experiment: str, out: Path, scratch: Path) -> None:
    """The first page ``brainbench ui`` opens, in a fresh browser profile, with no click."""
    script = Path(sys.executable).with_name("brainbench")
    ui = subprocess.Popen(
        [str(script) if script.exists() else "brainbench", "ui", "--tracking-uri", uri, "--experiment", experiment],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    browser = None
    try:
        line = ui.stdout.readline() if ui.stdout else ""
        if "http://" not in line:
            raise SystemExit(f"brainbench ui printed no URL: {line!r}")
        url = line[line.index("http://"):].split()[0]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        eid = client.get_experiment_by_name(experiment).experiment_id
        child = client.search_runs([eid], "tags.`mlflow.parentRunId` != ''", max_results=1)[0]
        browser, tools = start_browser(chromium(), str(scratch / "fresh-profile"))
        tools.open(url, child.info.run_name)  # a matrix cell's row: the parent is expanded
        out.mkdir(parents=True, exist_ok=True)
        tools.screenshot(out / "brainbench_ui.png")
        print(f"{out / 'brainbench_ui.png'}: the first page of {url} in a fresh browser profile, no click: the "
              "runs table with encoder, task, subject, seed and the test metrics as columns, matrix parents expanded")
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(timeout=20)
        ui.terminate()
        ui.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="brainbench")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--demo", action="store_true", help="run a small ridge matrix into a fresh store first")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        uri = make_demo_store(Path(scratch)) if args.demo else args.tracking_uri
        shoot_brainbench_ui(uri, args.experiment, args.out, Path(scratch))
        shoot_all(uri, args.experiment, args.out, Path(scratch))


def shoot_all(uri: str, experiment_name: str, out: Path, scratch: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SystemExit(f"no experiment {experiment_name!r} in {uri}")
    eid = experiment.experiment_id
    parents = client.search_runs([eid], "tags.`brainbench.kind` = 'matrix'", order_by=["attributes.start_time DESC"])
    if not parents:
        raise SystemExit("no matrix run to show")
    parent = parents[0]
    children = client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    metrics = sorted(k for k in children[0].data.metrics if k.startswith("test.") and not k.endswith(("_low", "_high")))
    metrics = [m for m in metrics if "300way" in m][:2] or metrics[:2]
    params = differing_params(children)
    out.mkdir(parents=True, exist_ok=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
    )
    browser = None
    try:
        wait_healthy(base)
        browser, tools = start_browser(chromium(), str(scratch / "profile"))
        runs_url = f"{base}/#/experiments/{eid}/runs"
        tools.open(runs_url, parent.info.run_name)
        key = f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([eid])}-ReactComponentState"
        saved = json.loads(str(tools.js(f"localStorage.getItem({json.dumps(key)})") or "{}"))
        state = runs_view_state(saved, parent.info.run_id, metrics, params)
        tools.js(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))})")
        tools.js("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")  # the side panel, closed
        tools.call("Page.reload")
        tools.wait_for(children[0].info.run_name)
        ids = json.dumps([r.info.run_id for r in children[:6]])
        pages = {
            "mlflow_runs.png": (None, "the experiment's runs table (the default view, not GenAI traces): the "
                                "matrix parent expanded to its child runs, named by what differs (encoder and "
                                f"settings, subject, seed); columns Dataset (train/test inputs, the parent's too), "
                                f"Models (--log-model), {', '.join(metrics)} and {', '.join(params) or 'no param'}"),
            "mlflow_parent_run.png": (f"{base}/#/experiments/{eid}/runs/{parent.info.run_id}",
                                      "the parent (matrix) run: summary metrics per encoder row and metric, "
                                      "its dataset inputs, params and tags"),
            "mlflow_compare.png": (f"{base}/#/compare-runs?runs={urllib.parse.quote(ids)}"
                                   f"&experiments={urllib.parse.quote(json.dumps([eid]))}",
                                   "the compare page of the cells: settings and test metrics side by side"),
        }
        for name, (url, what) in pages.items():
            if url is not None:
                tools.open(url, parent.info.run_name if "compare" not in url else children[0].info.run_name)
            tools.screenshot(out / name)
            print(f"{out / name}: {what}")
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(timeout=20)
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
