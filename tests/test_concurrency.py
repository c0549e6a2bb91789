"""Concurrent processes in one directory, one BRAINBENCH_HOME, one SQLite store: nothing is lost or clobbered.

The processes are real: the installed console script (or a Python child) started at the same moment.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from brainbench.errors import BrainbenchError
from brainbench.locks import LockBusy, hold
from brainbench.workdirs import CHECKPOINTS, claim_run_folder, run_folders

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = ("results.json", "config.json", "metrics.md", "checkpoint/model.npz", "figures/retrieval_draws.json")


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("brainbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "brainbench.cli.app"]


def child_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "BRAINBENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def start_together(commands: list[list[str]], cwd: Path, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for command in commands
    ]


def finish(processes: list[subprocess.Popen[str]], timeout: float = 1200) -> list[str]:
    """Their outputs, once all have ended with status 0 (a generous timeout: CI machines can be busy)."""
    try:
        outputs = [process.communicate(timeout=timeout)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    return outputs


def store_runs(store: Path) -> dict[str, dict]:
    """Every run in the store: status, artifact folder, test metrics, cell key, work folder."""
    with sqlite3.connect(store) as con:
        runs = {
            run_id: {"status": status, "artifacts": Path(uri.removeprefix("file://")), "metrics": {}}
            for run_id, status, uri in con.execute("select run_uuid, status, artifact_uri from runs")
        }
        for run_id, key, value in con.execute("select run_uuid, key, value from latest_metrics"):
            if key.startswith("test."):
                runs[run_id]["metrics"][key] = value
        for run_id, value in con.execute("select run_uuid, value from params where key = 'cell_key'"):
            runs[run_id]["cell"] = value
        for run_id, value in con.execute("select run_uuid, value from tags where key = 'brainbench.work_dir'"):
            runs[run_id]["work_dir"] = value
    return runs


# --------------------------------------------------------------------------------- whole runs, N at once


SEEDS = [0, 0, 0, 0, 1, 2, 3, 4]  # N=8 at once: four runs of one cell, four other cells


def test_runs_started_together_all_finish_with_their_artifacts(tmp_path: Path):
    """8 `brainbench run` processes at once on a fresh home and a fresh store (its tables made by them): every
    run ends FINISHED with its records and artifacts, none goes offline, runs of one cell agree.

    Ridge on the tiny simulator keeps it within CI's budget (about a minute on 2 cores)."""
    store = tmp_path / "mlflow.db"
    home = tmp_path / "home"
    command = [*console_script(), "run", "ridge", "--task", "retrieval", "--dataset-opt", "scale=tiny",
               "--tracking-uri", f"sqlite:///{store}"]
    outputs = finish(start_together([[*command, "--seed", str(s)] for s in SEEDS], tmp_path, child_env(home)))

    runs = store_runs(store)
    assert sorted(run["status"] for run in runs.values()) == ["FINISHED"] * len(SEEDS)
    for run_id, run in runs.items():
        assert [name for name in ARTIFACTS if not (run["artifacts"] / name).is_file()] == [], run_id
    by_cell: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run in runs.values():
        by_cell[run["cell"]].append(run["metrics"])
    assert sorted(len(group) for group in by_cell.values()) == [1, 1, 1, 1, 4]
    for group in by_cell.values():
        assert group[0] and all(m == group[0] for m in group)  # identical cells, identical metrics
    assert len({run["work_dir"] for run in runs.values()}) == len(SEEDS)  # a folder per run, even per cell
    with sqlite3.connect(store) as con:
        assert con.execute("select count(*) from experiments where name = 'brainbench'").fetchone() == (1,)
    # no record lost: none went offline, and every record each run wrote down reached the store
    assert not list(home.rglob("UNLOGGED")) and not any("stopped answering" in out for out in outputs)
    for run_id, run in runs.items():
        journal = [json.loads(line) for line in (Path(run["work_dir"]) / "mlflow-journal.jsonl").open()]
        assert all(entry.get("sent", True) for entry in journal[1:]), run["work_dir"]
        with sqlite3.connect(store) as con:
            logged = {key for (key,) in con.execute("select key from latest_metrics where run_uuid = ?", (run_id,))}
        written = {key for entry in journal if entry.get("call") == "log_metrics"
                   for key, value in entry["args"][0].items() if value is not None and value == value}
        assert written and written <= logged, written - logged


# ----------------------------------------------------------------------------- resume state of one cell


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from brainbench.workdirs import claim_run_folder
    with claim_run_folder("cellkey", "ridge/retrieval/sub1/seed0", resume=True) as folder:
        folder.note_run_id("abc123")
        print(folder.path, folder.resumed_from, flush=True)
        while not Path(sys.argv[1]).exists():
            time.sleep(0.05)
    """
)


def write_checkpoint(folder: Path, text: str) -> None:
    (folder / CHECKPOINTS).mkdir(parents=True)
    (folder / CHECKPOINTS / "last.pt").write_text(text)


def test_resume_takes_a_checkpoint_once_and_names_the_process_training_from_it(
    tmp_path: Path, isolated_home: Path
):
    cell = isolated_home / "runs" / "cellkey"
    interrupted = cell / "20260101-000000-0000abcd"
    write_checkpoint(interrupted, "epoch 3")
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(release)], env=child_env(isolated_home), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        line = holder.stdout.readline().split()  # type: ignore[union-attr]
        assert len(line) == 2, holder.stderr.read()  # type: ignore[union-attr]
        held, source = Path(line[0]), Path(line[1])
        assert source == interrupted and (held / CHECKPOINTS / "last.pt").read_text() == "epoch 3"
        assert not (interrupted / CHECKPOINTS).exists()  # moved, not copied: no second resumer finds it

        with pytest.raises(LockBusy) as busy:
            with claim_run_folder("cellkey", "ridge/retrieval/sub1/seed0", resume=True):
                pass
        message = str(busy.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message and "abc123" in message
        assert str(held) in message

        # A fresh run meanwhile is independent: its own folder, and it leaves the running one alone.
        notes: list[str] = []
        with claim_run_folder("cellkey", "ridge/retrieval/sub1/seed0", resume=False, say=notes.append) as fresh:
            assert fresh.path != held and fresh.resumed_from is None and not (fresh.path / CHECKPOINTS).exists()
        assert (held / CHECKPOINTS / "last.pt").exists() and not interrupted.exists()
        assert any(f"pid {holder.pid}" in note for note in notes)
    finally:
        release.touch()
        holder.wait(timeout=600)
    assert holder.returncode == 0

    # The holder has ended: the next --resume continues from its checkpoints.
    with claim_run_folder("cellkey", "ridge/retrieval/sub1/seed0", resume=True) as again:
        assert again.resumed_from == held and (again.path / CHECKPOINTS / "last.pt").read_text() == "epoch 3"


def test_resume_finds_an_interrupted_checkpoint_of_the_old_layout_and_a_killed_runs(isolated_home: Path):
    cell = isolated_home / "runs" / "cellkey"
    write_checkpoint(cell, "old layout")  # runs/<key>/checkpoints, as written before run folders
    with claim_run_folder("cellkey", "label", resume=True) as first:
        assert first.resumed_from == cell and (first.path / CHECKPOINTS / "last.pt").read_text() == "old layout"
    # A run killed with SIGKILL releases its folder: the OS drops the lock with the process.
    killed = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(isolated_home / "never")], env=child_env(isolated_home), text=True,
        stdout=subprocess.PIPE,
    )
    held = Path(killed.stdout.readline().split()[0])  # type: ignore[union-attr]
    killed.kill()
    killed.wait(timeout=600)
    with claim_run_folder("cellkey", "label", resume=True) as resumed:
        assert resumed.resumed_from == held
    # a fresh start never deletes an interrupted training without a word (issue 17): it asks, --restart discards
    from brainbench.workdirs import InterruptedTrainingError

    with pytest.raises(InterruptedTrainingError, match="--resume to continue it, or --restart"):
        with claim_run_folder("cellkey", "label", resume=False):
            pass
    with claim_run_folder("cellkey", "label", resume=False, restart=True) as fresh:
        assert run_folders(cell) == [fresh.path]  # the idle folders are gone


KILLED_MID_CHECKPOINT = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from brainbench.checkpoint import atomic_torch_save
    from brainbench.workdirs import claim_run_folder
    with claim_run_folder("cellkey", "label", resume=False) as folder:
        atomic_torch_save({"epoch": torch.tensor(1)}, folder.path / "checkpoints" / "last.pt")
        print(folder.path, flush=True)
        sys.stdin.readline()
        atomic_torch_save({"weights": torch.zeros(2**27)}, folder.path / "checkpoints" / "last.pt")  # 512 MiB
    """
)


def test_temporary_files_of_a_checkpoint_cut_short_are_removed_at_the_next_start(isolated_home: Path):
    """A run killed while writing its checkpoint leaves a half file, `.last.pt.<pid>.tmp` (as big as the
    checkpoint: ~11 GB for MindEye); the next start of the cell removes it, says so, and never resumes with it."""
    import signal

    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_CHECKPOINT], env=child_env(isolated_home), text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    folder = Path(child.stdout.readline().strip())
    child.stdin.write("go\n")
    child.stdin.flush()
    half = folder / CHECKPOINTS / f".last.pt.{child.pid}.tmp"
    deadline = time.time() + 300
    while not (half.exists() and half.stat().st_size > 2**20) and time.time() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)  # mid-write
    child.wait(timeout=60)
    assert half.is_file() and half.stat().st_size > 2**20

    said: list[str] = []
    with claim_run_folder("cellkey", "label", resume=True, say=said.append) as resumed:
        assert resumed.resumed_from == folder
        assert sorted(p.name for p in (resumed.path / CHECKPOINTS).iterdir()) == ["last.pt"]  # not carried along
    assert not half.exists()
    assert any(note.startswith("removed 1 temporary file(s) (") and str(folder / CHECKPOINTS) in note for note in said)


def test_a_held_lock_names_its_holder_or_is_waited_for(tmp_path: Path):
    lock, release = tmp_path / "thing.lock", tmp_path / "release"
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from brainbench.locks import hold
        with hold(Path(sys.argv[1]), "the thing"):
            print("held", flush=True)
            while not Path(sys.argv[2]).exists():
                time.sleep(0.02)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(lock), str(release)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"  # type: ignore[union-attr]
    with pytest.raises(LockBusy, match=f"the thing is in use by pid {child.pid} on host"):
        with hold(lock, "the thing", wait=False):
            pass
    said: list[str] = []
    threading.Timer(2.0, release.touch).start()  # the holder lets go while this process waits
    started = time.perf_counter()
    with hold(lock, "the thing", patience=0.1, say=said.append):
        waited = time.perf_counter() - started
    child.wait(timeout=600)
    assert waited > 1.0 and len(said) == 1 and f"pid {child.pid}" in said[0]
    assert issubclass(LockBusy, BrainbenchError)  # the CLI prints it as one line, no traceback


# ------------------------------------------------------------------------------ caches made on first use


def test_synthetic_god_written_once_while_processes_read_it(isolated_home: Path):
    script = (
        "from brainbench_god.dataset import open_synthetic_god\n"
        "d = open_synthetic_god(scale='tiny')\n"
        "print(sorted(d.subjects()), d.trials(5, 'train').load().shape)\n"
    )
    processes = start_together([[sys.executable, "-c", script]] * 3, REPO, child_env(isolated_home))
    outputs = finish(processes)
    assert len({output.strip().splitlines()[-1] for output in outputs}) == 1
    assert "[1, 2, 3, 4, 5]" in outputs[0]
    leftovers = [p.name for p in (isolated_home / "synthetic").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


CACHE_BUILDER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from brainbench.interfaces import Dataset, Trials
    from brainbench_clip.cache import build_cache, read_cached

    class Images(Dataset):
        name = "concurrency-images"
        def subjects(self): return [1]
        def n_voxels(self, subject): return 2
        def splits(self): return ["train"]
        def trials(self, subject, split): return Trials(np.zeros((12, 2), np.float32), np.arange(12))
        def images(self, ids): return np.stack([np.full((3, 4, 4), i, np.float32) for i in ids])

    class Target:
        name, shape, model_name, batch_size = "fake", (3,), "fake-model", 3
        kind, storage_dtype = "pooled", "float32"
        def weights_id(self): return "w0"
        def dataset_images(self, dataset, ids): return dataset.images(ids)
        def encode_images(self, images):
            time.sleep(0.2)  # slow enough for the builds to overlap
            return images[:, :, 0, 0].astype(np.float32)

    result = build_cache(Images(), Target())
    values, missing = read_cached(Images(), Target(), np.arange(12))
    print(json.dumps({"encoded": result.n_encoded, "ok": bool(np.array_equal(values[:, 0], np.arange(12)))}))
    """
)


def test_target_cache_built_once_by_processes_started_together(isolated_home: Path):
    processes = start_together([[sys.executable, "-c", CACHE_BUILDER]] * 3, REPO, child_env(isolated_home))
    reports = [json.loads(output.strip().splitlines()[-1]) for output in finish(processes)]
    assert all(report["ok"] for report in reports)
    assert sorted(report["encoded"] for report in reports) == [0, 0, 12]  # one build; the others waited


def test_laion_gallery_built_once_by_processes_started_together(isolated_home: Path):
    script = (
        "from brainbench.plugins import get_plugins\n"
        "from brainbench_laion.task import ensure_default_gallery\n"
        "d = get_plugins().datasets.create('synthetic-nsd', scale='tiny')\n"
        "print(ensure_default_gallery(d, 300, 0))\n"
    )
    processes = start_together([[sys.executable, "-c", script]] * 3, REPO, child_env(isolated_home))
    outputs = finish(processes)
    built = [output for output in outputs if "building a simulated" in output]
    assert len(built) == 1, outputs
    index_dir = Path(outputs[0].strip().splitlines()[-1])
    assert (index_dir / "manifest.json").is_file() and {Path(o.strip().splitlines()[-1]) for o in outputs} == {
        index_dir
    }


def test_unlogged_results_are_neither_removed_nor_resumed_from_unasked(isolated_home: Path):
    """A run folder whose records never reached MLflow (brainbench/records/journal.py) blocks a fresh start and a
    resume of its cell, naming `brainbench log`; --restart discards it, saying so."""
    from brainbench.records.journal import UNLOGGED
    from brainbench.workdirs import UnloggedResultsError

    with claim_run_folder("cellkey", "label", resume=False) as first:
        (first.path / CHECKPOINTS).mkdir()
        (first.path / CHECKPOINTS / "model.safetensors").write_text("trained")
        (first.path / UNLOGGED).write_text("store gone")
    for resume in (False, True):
        with pytest.raises(UnloggedResultsError, match=f"brainbench log {first.path}`, or pass --restart"):
            with claim_run_folder("cellkey", "label", resume=resume):
                pass
        assert (first.path / UNLOGGED).exists() and (first.path / CHECKPOINTS / "model.safetensors").exists()
    said: list[str] = []
    with claim_run_folder("cellkey", "label", resume=False, say=said.append, restart=True) as fresh:
        assert not first.path.exists() and fresh.path.exists()
    assert any("discarding the unlogged results" in line for line in said)
