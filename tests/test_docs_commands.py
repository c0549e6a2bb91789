"""Every ``brainbench`` command in README.md and docs/*.md runs, through the installed console script.

Commands are read from the documents' code blocks (fenced or indented), continuation lines joined and
trailing comments dropped, so a command added to the docs is tested without touching this file. Runs and
matrices are executed with ``--dry-run`` (every option checked and every plugin object of every cell built,
nothing trained), after one tiny real matrix that gives ``compare`` something to read back. Placeholders
(``OUT``, ``<parent run id>``) are filled in by ``FILLED`` below and ``a | b | c`` gives a command per value;
``SKIPPED`` lists the few that need what a CI machine lacks, each with its reason. Inline mentions in prose
are not commands and are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CLI = str(Path(sys.executable).with_name("brainbench"))

#: Documented command -> what needs a cluster, real data or a GPU (never run here).
SKIPPED = {
    'brainbench matrix run decoders.toml --launcher ray --ray-address "$head:$port" --cpus-per-cell 8 '
    "--tracking-uri http://mlflow.lab.example:5000 --resume": "needs a Slurm allocation, a Ray cluster and an "
    "MLflow server (the cells themselves are checked by the decoders.toml --dry-run)",
}

#: Documented command with placeholders -> the commands that stand for it here.
FILLED = {
    "brainbench index simulate OUT --dataset synthetic-nsd --size 1000000": [
        # 1,000,000 distractors are 1.5 GB: the same command at a size a CI machine writes in seconds
        "brainbench index simulate gallery --dataset synthetic-nsd --size 2000",
    ],
    "brainbench index build SOURCE OUT [--kind auto|flat|ivfpq] [--pq-m 64] [--nlist N] [--train-size N]": [
        "brainbench index build gallery index --kind flat",
        "brainbench index build gallery index-pq --kind ivfpq --pq-m 8 --nlist 16 --train-size 1000",
    ],
    "brainbench index info OUT": ["brainbench index info index"],
    "brainbench index query OUT --row 42 -k 5": ["brainbench index query index --row 42 -k 5"],
    "brainbench index serve OUT --host 0.0.0.0 --port 1234": ["SERVE index"],
    "brainbench compare my-experiment": ["brainbench compare brainbench"],
    # `ui` serves until Ctrl-C (and --open would start a browser here): start it, fetch its page, stop it
    "brainbench ui": ["UI"],
    "brainbench ui --open": ["UI"],
    "brainbench compare <parent run id>": ["brainbench compare PARENT"],
}


def alternatives(command: str) -> list[str]:
    """``brainbench compare -f csv | markdown | json`` -> one command per value (docs never pipe)."""
    head, *rest = [part.strip() for part in command.split(" | ")]
    stem = head.rsplit(" ", 1)[0]
    return [head, *(f"{stem} {value}" for value in rest)]

TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.DOTALL)


#: Fence languages that mark output, not commands.
OUTPUT_FENCES = ("text", "output")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for each ``brainbench ...`` line of a code block in the documents."""
    found = []
    for document in DOCUMENTS:
        lines = document.read_text().splitlines()
        in_fence = output = False
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                # a ```text block is printed output (a benchmark's table), not commands to run
                output = in_fence and line.strip().removeprefix("```").strip() in OUTPUT_FENCES
                i += 1
                continue
            previous = lines[i - 1] if i else ""
            indented = line.startswith("    ") and (not previous.strip() or previous.startswith("    "))
            text = line.strip()
            number = i + 1
            while text.endswith("\\") and i + 1 < len(lines):  # continuation lines
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            if ((in_fence and not output) or (indented and not in_fence)) and text.startswith("brainbench "):
                command = re.split(r"\s+#\s", text, maxsplit=1)[0].strip()
                found.append((f"{document.relative_to(REPO)}:{number}", command))
    return found


COMMANDS = documented_commands()


def _env(workspace: Path) -> dict[str, str]:
    env = {**os.environ, "BRAINBENCH_HOME": str(workspace / "home"), "COLUMNS": "200"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace}/mlflow.db"
    env.pop("BRAINBENCH_DEBUG", None)
    return env


def _run(argv: list[str], workspace: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *argv], capture_output=True, text=True, cwd=workspace, env=_env(workspace),
                          timeout=timeout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A working folder with docs/matrix.md's decoders.toml and one tiny real matrix in its MLflow store."""
    folder = tmp_path_factory.mktemp("docs")
    spec = TOML_BLOCK.search((REPO / "docs" / "matrix.md").read_text())
    assert spec, "docs/matrix.md lost its decoders.toml example"
    (folder / "decoders.toml").write_text(spec.group(1))
    real = _run(["run", "ridge", "--task", "retrieval", "--seed", "0", "--seed", "1", "--dataset-opt", "scale=tiny"],
                folder)
    assert real.returncode == 0, real.stdout + real.stderr
    parent = re.search(r"brainbench compare ([0-9a-f]{32})", real.stdout.replace("\n", ""))
    assert parent, real.stdout
    return {"folder": folder, "parent": parent.group(1)}


def test_the_documents_hold_commands():
    assert len(COMMANDS) >= 20, COMMANDS
    assert all(command in {c for _, c in COMMANDS} for command in [*SKIPPED, *FILLED]), "a table entry went stale"


def _as_run(command: str, parent: str) -> list[str]:
    argv = shlex.split(command)[1:]
    argv = [parent if arg == "PARENT" else arg for arg in argv]
    if argv[:1] in (["run"], ["reproduce"]) or argv[:2] == ["matrix", "run"]:
        if "--dry-run" not in argv:
            argv.append("--dry-run")
    return argv


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_runs(where: str, command: str, workspace: dict[str, object]) -> None:
    if command in SKIPPED:
        pytest.skip(SKIPPED[command])
    folder = workspace["folder"]
    assert isinstance(folder, Path)
    for filled in FILLED.get(command, alternatives(command)):
        if filled.startswith("SERVE "):
            _serve(filled.split()[1], folder)
            continue
        if filled == "UI":
            _ui(folder)
            continue
        if filled.startswith("brainbench index") and not (folder / "gallery").exists() and "simulate" not in filled:
            _run(["index", "simulate", "gallery", "--dataset", "synthetic-nsd", "--size", "2000"], folder)
        if filled.startswith("brainbench index") and "build" not in filled and "simulate" not in filled \
                and not (folder / "index").exists():
            _run(["index", "build", "gallery", "index", "--kind", "flat"], folder)
        if "NSD_ROOT" in filled or "--dataset nsd --data-path OUT" in filled:
            filled = _on_raw_nsd(filled, folder)
        result = _run(_as_run(filled, str(workspace["parent"])), folder)
        shown = f"{where}: {filled}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert result.returncode == 0, shown
        assert "Traceback" not in result.stderr, shown


def _on_raw_nsd(command: str, folder: Path) -> str:
    """docs/nsd-rois.md's commands on a small raw-NSD tree (tests/nsd_fixtures.py: nibabel, h5py, scipy.io;
    20 trials per session) and its preparation with stored targets, so ``--data-path OUT`` runs read it."""
    import h5py
    import numpy as np

    from brainbench_nsd.prepare import prepare_nsd
    from tests.nsd_fixtures import write_fake_nsd

    if not (folder / "NSD_ROOT").exists():
        write_fake_nsd(folder / "NSD_ROOT", sessions=2, trials_per_session=20, n_ids=200)
    if "NSD_ROOT" in command:
        return command + " --trials-per-session 20"
    prepare_nsd(folder / "NSD_ROOT", folder / "OUT", 1, trials_per_session=20,
                roi="nsdgeneral,prf-visualrois,streams")
    with h5py.File(folder / "OUT" / "clip_targets.hdf5", "w") as f:
        f.create_dataset("pooled", data=np.random.default_rng(0).standard_normal((200, 768)).astype(np.float32))
    return command + " --target synthetic-clip"


def _serve(index: str, folder: Path) -> None:
    """``index serve`` blocks: start it on 127.0.0.1 (never 0.0.0.0 in a test), ask /indices-list, stop it."""
    import json
    import socket
    import time
    import urllib.request

    if not (folder / index).exists():
        _run(["index", "simulate", "gallery", "--dataset", "synthetic-nsd", "--size", "2000"], folder)
        _run(["index", "build", "gallery", index, "--kind", "flat"], folder)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([CLI, "index", "serve", index, "--host", "127.0.0.1", "--port", str(port)],
                              cwd=folder, env=_env(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/indices-list", timeout=2) as response:
                    assert json.loads(response.read()) == ["laion5B-L-14"]
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "index serve did not answer within 120 s"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ui(folder: Path) -> None:
    """``brainbench ui`` blocks: start it, read the URL it prints, fetch that page, stop it."""
    import urllib.request

    server = subprocess.Popen([CLI, "ui"], cwd=folder, env=_env(folder), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        found = re.search(r"(http://127\.0\.0\.1:\d+/brainbench)", line)
        assert found, line + (server.stderr.read() if server.stderr and server.poll() is not None else "")
        with urllib.request.urlopen(found.group(1), timeout=60) as response:
            assert response.status == 200 and "localStorage" in response.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=60)
