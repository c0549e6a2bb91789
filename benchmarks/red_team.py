"""The red-team catalogue of issue 22: hostile or broken input against a `brainbench` executable, each outcome counted.

    python benchmarks/red_team.py --brainbench /path/to/venv/bin/brainbench [--jobs 2] [--only WORD ...]
        [--json OUT.json] [--slow] [--list]

Each probe runs the given executable (in a subprocess, as a user would) in a scratch working folder with a
scratch BRAINBENCH_HOME and its own SQLite store, and is classified:

- ``clean``: refused (or warned about, where a warning is the right answer) in a message that names the bad
  thing, no traceback, before any MLflow run exists;
- ``internal``: a traceback or "Internal error";
- ``silent``: accepted without a word (the bad input ran, or the harm the probe looks for happened);
- ``hang``: still running at the probe's time limit (killed);
- ``misleading``: refused cleanly but the message names the wrong thing (or not the bad thing);
- ``blocked``: a broken plugin took an unrelated command down with it (no traceback, but nothing works).

It also counts FAILED runs created by bad input, runs left RUNNING (a finished process owns none) and data lost
(a finished run rewritten). Probes are grouped by the issue's items (1 journals, 2 command replacement, 3 broken
plugins, 4 the index server, 6 bad input, 7 liveness and leftovers, 8 logged models); item 5 (a busy store) is
measured by benchmarks/bench_concurrent_runs.py, and ``--slow`` adds the one slow probe of it here.

The harness itself needs numpy and h5py (the fixtures are written with h5py), so run it with a venv's Python.
The executable's own Python (next to it) runs the few probes of the Python API (a logged model's loader).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OUTCOMES = ("clean", "internal", "silent", "hang", "misleading", "blocked", "skipped")
TRACEBACK_MARKS = ("Traceback (most recent call last)", "Internal error")


# ------------------------------------------------------------------------------------------------ plumbing


@dataclass
class Shared:
    """Made once per campaign: a warm home (simulated NSD subject 1 written), a store with one FINISHED run."""

    root: Path
    brainbench: str
    python: str
    extra_env: dict[str, str] = field(default_factory=dict)  # --env: set for every probe (e.g. PYTHONPATH)
    warm_home: Path = field(init=False)
    store_dir: Path = field(init=False)
    ready: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        self.warm_home = self.root / "warm-home"
        self.store_dir = self.root / "store"


@dataclass
class Ctx:
    """One probe's scratch: its working folder (cwd, default store), home, and environment."""

    shared: Shared
    root: Path
    cwd: Path
    home: Path
    env: dict[str, str]

    def run(self, args: list[str], timeout: float = 60, env: dict[str, str] | None = None,
            cwd: Path | None = None, stdin: str | None = None, prefix: list[str] | None = None) -> Result:
        return run_process([*(prefix or []), self.shared.brainbench, *args], {**self.env, **(env or {})},
                           cwd or self.cwd, timeout, stdin)

    def python(self, code: str, timeout: float = 60, env: dict[str, str] | None = None) -> Result:
        return run_process([self.shared.python, "-c", code], {**self.env, **(env or {})}, self.cwd, timeout)

    def copy_store(self) -> str:
        """The shared store (one FINISHED ridge run) copied into the working folder; returns that run's id."""
        for item in self.shared.store_dir.iterdir():
            target = self.cwd / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
        with sqlite3.connect(self.cwd / "mlflow.db") as db:
            return db.execute("select run_uuid from runs where status='FINISHED' limit 1").fetchone()[0]


@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err

    def has_traceback(self) -> bool:
        return any(mark in self.text for mark in TRACEBACK_MARKS)

    def first_line(self) -> str:
        """The line a user reads first: an error or warning line when there is one (MLflow's INFO lines skipped)."""
        lines = [ln.strip() for ln in (self.err + "\n" + self.out).splitlines() if ln.strip()]
        lines = [ln for ln in lines if " INFO " not in ln and not ln.startswith(("INFO", "[20"))]
        for mark in ("Internal error", "Error", "error:", "warning", "Warning"):
            found = next((ln for ln in lines if mark in ln), None)
            if found:
                return found[:160]
        return lines[0][:160] if lines else ""


def run_process(command: list[str], env: dict[str, str], cwd: Path, timeout: float,
                stdin: str | None = None) -> Result:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, text=True,
                               errors="replace", start_new_session=True)
    try:
        out, err = process.communicate(stdin, timeout=timeout)
        return Result(process.returncode, out, err, time.perf_counter() - started, False)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return Result(None, out, err, time.perf_counter() - started, True)


@dataclass
class Outcome:
    outcome: str
    note: str = ""
    failed_runs: int = 0
    running_runs: int = 0
    run_folders: int = 0
    data_lost: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Probe:
    name: str
    item: int
    area: str
    body: Callable[[Ctx], tuple[str, str] | tuple[str, str, int]]  # -> (outcome, note[, data lost])
    slow: bool = False


def judge_refusal(result: Result, mentions: tuple[str, ...] = (), forbid: tuple[str, ...] = (),
                  warn_ok: tuple[str, ...] = ()) -> tuple[str, str]:
    """The default verdict for input that must be refused (or, with ``warn_ok``, may run with a warning)."""
    line = result.first_line()
    if result.timed_out:
        return "hang", f"still running after {result.seconds:.0f}s"
    if result.has_traceback():
        return "internal", line
    text = result.text.lower()
    if result.rc == 0:
        if warn_ok and any(word.lower() in text for word in warn_ok):
            said = [ln.strip() for ln in result.text.splitlines() if any(w.lower() in ln.lower() for w in warn_ok)]
            return "clean", "warned: " + (said[0][:160] if said else "")
        return "silent", "exit 0" + (f": {line}" if line else "")
    if any(word.lower() in text for word in forbid) or not all(word.lower() in text for word in mentions):
        return "misleading", f"exit {result.rc}: {line}"
    return "clean", f"exit {result.rc}: {line}"


def refuse(args: list[str], mentions: tuple[str, ...] = (), forbid: tuple[str, ...] = (),
           setup: Callable[[Ctx], Any] | None = None, timeout: float = 60, warn_ok: tuple[str, ...] = (),
           env: dict[str, str] | None = None) -> Callable[[Ctx], tuple[str, str]]:
    """A probe body: run ``args`` (``{data}`` replaced by what ``setup`` returns) and judge a refusal."""

    def body(ctx: Ctx) -> tuple[str, str]:
        made = setup(ctx) if setup else None
        real = [a.replace("{data}", str(made)) if "{data}" in a else a for a in args]
        real = [a.replace("{cwd}", str(ctx.cwd)) for a in real]
        return judge_refusal(ctx.run(real, timeout=timeout, env=env), mentions, forbid, warn_ok)

    return body


def count_runs(root: Path) -> tuple[int, int]:
    """FAILED and RUNNING runs in every SQLite store under ``root``."""
    failed = running = 0
    for db in root.rglob("*.db"):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                rows = conn.execute("select status from runs").fetchall()
        except sqlite3.Error:
            continue
        failed += sum(1 for (s,) in rows if s == "FAILED")
        running += sum(1 for (s,) in rows if s == "RUNNING")
    return failed, running


def count_run_folders(home: Path) -> int:
    runs = home / "runs"
    return sum(1 for p in runs.glob("*/*") if p.is_dir()) if runs.is_dir() else 0


def execute(probe: Probe, shared: Shared, base: Path) -> Outcome:
    root = Path(tempfile.mkdtemp(prefix=f"{probe.name[:40].replace('/', '_')}-", dir=base))
    cwd, home = root / "work", root / "home"
    cwd.mkdir()
    home.mkdir()
    synthetic = shared.warm_home / "synthetic"
    if synthetic.is_dir():  # hard links: the simulator's files are read, never rewritten, once they exist
        shutil.copytree(synthetic, home / "synthetic", copy_function=os.link)
    env = {**os.environ, "BRAINBENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "COLUMNS": "200", "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}
    for name in ("MLFLOW_TRACKING_URI", "BRAINBENCH_PLUGINS", "BRAINBENCH_STRICT_PLUGINS", "BRAINBENCH_DEBUG"):
        env.pop(name, None)
    env.update(shared.extra_env)
    ctx = Ctx(shared, root, cwd, home, env)
    started = time.perf_counter()
    try:
        verdict = probe.body(ctx)
    except Exception as exc:  # the harness's own failure: reported, never counted as the tool's
        verdict = ("skipped", f"harness: {type(exc).__name__}: {exc}")
    outcome = Outcome(verdict[0], verdict[1], seconds=time.perf_counter() - started)
    outcome.data_lost = verdict[2] if len(verdict) > 2 else 0  # type: ignore[misc]
    outcome.failed_runs, outcome.running_runs = count_runs(root)
    if probe.area in ("data", "options", "spec"):
        outcome.run_folders = count_run_folders(home)
    shutil.rmtree(root, ignore_errors=True)
    return outcome


# ------------------------------------------------------------------------------------------- NSD fixtures

N_VOXELS, N_TRAIN_IMAGES, N_TEST_IMAGES = 48, 60, 30


def write_nsd(folder: Path, betas: Any = "good", table: str | bytes | None = None, targets: Any = "good") -> Path:
    """A MindEye2-layout NSD folder (betas HDF5 + trial table CSV + pooled targets), written with h5py.

    ``betas``: "good", an array to store, or a callable(h5py.File) that writes ``betas`` itself;
    ``table``: the trial table's text/bytes (default: a valid one); ``targets``: "good" or a callable.
    """
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_images = N_TRAIN_IMAGES + N_TEST_IMAGES
    pooled = rng.normal(size=(n_images, 768)).astype(np.float32)
    images = np.r_[np.repeat(np.arange(N_TRAIN_IMAGES), 2), np.repeat(np.arange(N_TRAIN_IMAGES, n_images), 2)]
    n_trials = len(images)
    if isinstance(betas, str) and betas == "good":
        mixing = rng.normal(size=(768, N_VOXELS)).astype(np.float32) / 28
        betas = pooled[images] @ mixing + 0.5 * rng.normal(size=(n_trials, N_VOXELS)).astype(np.float32)
    with h5py.File(folder / "betas_all_subj01_fp32_renorm.hdf5", "w") as f:
        if callable(betas):
            betas(f)
        else:
            f.create_dataset("betas", data=betas)
    if table is None:
        rows = [f"{img},{t},{1 + t // 60},{'train' if img < N_TRAIN_IMAGES else 'test'}"
                for t, img in enumerate(images)]
        table = "image_index,trial_index,session,split\n" + "\n".join(rows) + "\n"
    path = folder / "trials_subj01.csv"
    path.write_bytes(table if isinstance(table, bytes) else table.encode())
    with h5py.File(folder / "clip_targets.hdf5", "w") as f:
        if callable(targets):
            targets(f)
        else:
            f.create_dataset("pooled", data=pooled)
    return folder


def good_table(transform: Callable[[list[list[str]]], None]) -> str:
    """The default trial table with rows changed by ``transform`` (a list of [image, trial, session, split])."""
    n_images = N_TRAIN_IMAGES + N_TEST_IMAGES
    images = np.r_[np.repeat(np.arange(N_TRAIN_IMAGES), 2), np.repeat(np.arange(N_TRAIN_IMAGES, n_images), 2)]
    rows = [[str(img), str(t), str(1 + t // 60), "train" if img < N_TRAIN_IMAGES else "test"]
            for t, img in enumerate(images)]
    transform(rows)
    return "image_index,trial_index,session,split\n" + "\n".join(",".join(r) for r in rows) + "\n"


def good_betas() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(size=(2 * (N_TRAIN_IMAGES + N_TEST_IMAGES), N_VOXELS)).astype(np.float32)


NSD_RUN = ["run", "ridge", "--task", "retrieval", "--dataset", "nsd", "--target", "synthetic-clip",
           "--data-path", "{data}"]


def data_probes() -> list[Probe]:
    import h5py

    def group(f: Any) -> None:
        f.create_group("betas").create_dataset("x", data=np.zeros((3, 3), np.float32))

    def external_missing(f: Any) -> None:
        f["betas"] = h5py.ExternalLink("/nonexistent/missing.hdf5", "/betas")

    def soft_dangling(f: Any) -> None:
        f["betas"] = h5py.SoftLink("/nowhere")

    def scalar(f: Any) -> None:
        f.create_dataset("betas", data=np.float32(1.0))

    def strings(f: Any) -> None:
        f.create_dataset("betas", data=np.array([[b"a", b"b"]] * 240))

    def compound(f: Any) -> None:
        f.create_dataset("betas", data=np.zeros((240, N_VOXELS), dtype=[("a", "f4"), ("b", "f4")]))

    def huge(sign: float) -> np.ndarray:
        values = good_betas()
        values[::2] = sign * 3e38
        values[1::2] = -sign * 3e38
        return values

    def one_nan_row() -> np.ndarray:
        values = good_betas()
        values[37, 5] = np.nan
        return values

    def constant_rows() -> np.ndarray:
        values = good_betas()
        values[:] = 7.0
        return values

    def no_pooled(f: Any) -> None:
        f.create_dataset("other", data=np.zeros((3,), np.float32))

    def pooled_512(f: Any) -> None:
        f.create_dataset("pooled", data=np.zeros((N_TRAIN_IMAGES + N_TEST_IMAGES, 512), np.float32))

    def pooled_nan(f: Any) -> None:
        values = np.random.default_rng(2).normal(size=(N_TRAIN_IMAGES + N_TEST_IMAGES, 768)).astype(np.float32)
        values[4] = np.nan
        f.create_dataset("pooled", data=values)

    def pooled_short(f: Any) -> None:
        f.create_dataset("pooled", data=np.zeros((10, 768), np.float32))

    def neg_trial(rows: list[list[str]]) -> None:
        rows[5][1] = "-3"

    def neg_image(rows: list[list[str]]) -> None:
        rows[5][0] = "-1"

    def past_trial(rows: list[list[str]]) -> None:
        rows[5][1] = "100000"

    def past_image(rows: list[list[str]]) -> None:
        rows[5][0] = "5000"

    def bad_split(rows: list[list[str]]) -> None:
        rows[5][3] = "val"

    def float_text(rows: list[list[str]]) -> None:
        rows[5][0] = "3.5"

    def dup_trial(rows: list[list[str]]) -> None:
        rows[5][1] = rows[6][1]

    def all_train(rows: list[list[str]]) -> None:
        for row in rows:
            row[3] = "train"

    def all_test(rows: list[list[str]]) -> None:
        for row in rows:
            row[3] = "test"

    def huge_int(rows: list[list[str]]) -> None:
        rows[5][1] = str(2**70)

    layouts: dict[str, dict[str, Any]] = {
        "betas-zero-rows": {"betas": np.zeros((0, N_VOXELS), np.float32)},
        "betas-zero-voxels": {"betas": np.zeros((240, 0), np.float32)},
        "betas-group": {"betas": group},
        "betas-external-link-missing": {"betas": external_missing},
        "betas-dangling-soft-link": {"betas": soft_dangling},
        "betas-scalar": {"betas": scalar},
        "betas-1d": {"betas": np.zeros(240, np.float32)},
        "betas-3d": {"betas": np.zeros((240, 4, 12), np.float32)},
        "betas-strings": {"betas": strings},
        "betas-compound-dtype": {"betas": compound},
        "betas-int16": {"betas": (good_betas() * 300).astype(np.int16)},
        "betas-pm3e38": {"betas": huge(1.0)},
        "betas-nan-one-row": {"betas": one_nan_row()},
        "betas-inf-float64": {"betas": np.where(np.arange(N_VOXELS) == 3, np.inf, good_betas()).astype(np.float64)},
        "betas-all-zero": {"betas": np.zeros((240, N_VOXELS), np.float32)},
        "betas-constant": {"betas": constant_rows()},
        "betas-fewer-rows-than-table": {"betas": good_betas()[:100]},
        "table-binary": {"table": bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8))},
        "table-utf16": {"table": good_table(lambda rows: None).encode("utf-16")},
        "table-empty-file": {"table": b""},
        "table-header-only": {"table": "image_index,trial_index,session,split\n"},
        "table-missing-column": {"table": "image_index,trial_index\n1,2\n"},
        "table-negative-trial-index": {"table": good_table(neg_trial)},
        "table-negative-image-index": {"table": good_table(neg_image)},
        "table-trial-index-past-betas": {"table": good_table(past_trial)},
        "table-image-index-past-targets": {"table": good_table(past_image)},
        "table-split-val": {"table": good_table(bad_split)},
        "table-float-image-index": {"table": good_table(float_text)},
        "table-duplicate-trial": {"table": good_table(dup_trial)},
        "table-no-test-trials": {"table": good_table(all_train)},
        "table-no-train-trials": {"table": good_table(all_test)},
        "table-trial-index-2**70": {"table": good_table(huge_int)},
        "targets-no-pooled": {"targets": no_pooled},
        "targets-pooled-512": {"targets": pooled_512},
        "targets-pooled-nan": {"targets": pooled_nan},
        "targets-pooled-too-few": {"targets": pooled_short},
    }
    return [_with_layout(name, layouts.get(name, {})) for name in DATA_MENTIONS]


def _with_layout(name: str, layout: dict[str, Any]) -> Probe:
    """A probe running ridge on an NSD folder laid out as ``layout`` says (see write_nsd)."""
    mentions, forbid = DATA_MENTIONS[name]

    def setup(ctx: Ctx) -> Path:
        folder = write_nsd(ctx.root / "nsd", **layout)
        if name == "betas-not-hdf5":
            (folder / "betas_all_subj01_fp32_renorm.hdf5").write_text("not an hdf5 file\n")
        if name == "betas-truncated-hdf5":
            path = folder / "betas_all_subj01_fp32_renorm.hdf5"
            path.write_bytes(path.read_bytes()[:2048])
        if name == "targets-not-hdf5":
            (folder / "clip_targets.hdf5").write_text("nope\n")
        return folder

    return Probe(name, 6, "data", refuse(NSD_RUN, mentions, forbid, setup=setup))


DATA_MENTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _register_data_mentions() -> None:
    table = {
        "betas-zero-rows": (("betas",), ()),
        "betas-zero-voxels": (("betas",), ()),
        "betas-group": (("betas",), ()),
        "betas-external-link-missing": (("betas",), ()),
        "betas-dangling-soft-link": (("betas",), ()),
        "betas-scalar": (("betas",), ()),
        "betas-1d": (("betas",), ()),
        "betas-3d": (("betas",), ()),
        "betas-strings": (("betas",), ()),
        "betas-compound-dtype": (("betas",), ()),
        "betas-int16": (("betas", "int16"), ()),
        "betas-pm3e38": (("betas",), ()),
        "betas-nan-one-row": (("betas",), ()),
        "betas-inf-float64": (("betas",), ()),
        "betas-all-zero": (("betas",), ()),
        "betas-constant": (("betas",), ()),
        "betas-not-hdf5": (("betas_all_subj01",), ()),
        "betas-truncated-hdf5": (("betas_all_subj01",), ()),
        "betas-fewer-rows-than-table": (("trial_index",), ()),
        "table-binary": (("trials_subj01.csv",), ()),
        "table-utf16": (("trials_subj01.csv",), ()),
        "table-empty-file": (("trials_subj01.csv",), ()),
        "table-header-only": (("trials_subj01.csv",), ()),
        "table-missing-column": (("trials_subj01.csv",), ()),
        "table-negative-trial-index": (("trial_index",), ("past the betas",)),
        "table-negative-image-index": (("image_index",), ("stimulus id 179",)),
        "table-trial-index-past-betas": (("trial_index",), ()),
        "table-image-index-past-targets": (("image_index",), ()),
        "table-split-val": (("split",), ()),
        "table-float-image-index": (("trials_subj01.csv",), ()),
        "table-duplicate-trial": (("trials_subj01.csv",), ()),
        "table-no-test-trials": (("test",), ()),
        "table-no-train-trials": (("train",), ()),
        "table-trial-index-2**70": (("trials_subj01.csv",), ()),
        "targets-no-pooled": (("pooled",), ()),
        "targets-pooled-512": (("pooled",), ()),
        "targets-pooled-nan": (("pooled",), ()),
        "targets-pooled-too-few": (("image",), ()),
        "targets-not-hdf5": (("clip_targets",), ()),
    }
    DATA_MENTIONS.update(table)


_register_data_mentions()


def god_probes() -> list[Probe]:
    import h5py

    def folder_with(writer: Callable[[Path], None]) -> Callable[[Ctx], Path]:
        def setup(ctx: Ctx) -> Path:
            folder = ctx.root / "god"
            folder.mkdir()
            writer(folder / "Subject1.h5")
            return folder
        return setup

    def text(path: Path) -> None:
        path.write_text("not hdf5")

    def empty(path: Path) -> None:
        h5py.File(path, "w").close()

    def one_d(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("dataset", data=np.zeros(10))
            f.create_group("metadata")

    run = ["run", "ridge", "--task", "god-zeroshot", "--dataset", "god", "--data-path", "{data}"]
    return [
        Probe("god-not-hdf5", 6, "data", refuse(run, ("Subject1.h5",), setup=folder_with(text))),
        Probe("god-empty-hdf5", 6, "data", refuse(run, ("Subject1.h5",), setup=folder_with(empty))),
        Probe("god-1d-dataset", 6, "data", refuse(run, ("Subject1.h5",), setup=folder_with(one_d))),
        Probe("god-no-files", 6, "data", refuse(run, ("Subject",), setup=lambda ctx: _empty_folder(ctx.root / "g"))),
    ]


def _empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def litemind_npy_probes() -> list[Probe]:
    def folder(ctx: Ctx, train: Any) -> Path:
        root = ctx.root / "lm"
        root.mkdir()
        np.save(root / "subj01_nsdgeneral_betas_tr.npy", train, allow_pickle=True)
        return root

    run = ["run", "ridge", "--dataset", "nsd", "--target", "synthetic-clip", "--data-path", "{data}"]
    obj = np.empty(3, dtype=object)
    obj[:] = [1, "a", None]
    return [
        Probe("litemind-npy-object-array", 6, "data",
              refuse(run, ("subj01_nsdgeneral_betas_tr.npy",), setup=lambda ctx: folder(ctx, obj))),
        Probe("litemind-npy-1d", 6, "data",
              refuse(run, ("subj01",), setup=lambda ctx: folder(ctx, np.zeros(10, np.float32)))),
    ]


# ----------------------------------------------------------------------------------------- options (CLI)


def options_probes() -> list[Probe]:
    dry = ["--dry-run"]
    p: list[Probe] = []

    def add(name: str, args: list[str], mentions: tuple[str, ...] = (), forbid: tuple[str, ...] = (),
            timeout: float = 60, warn_ok: tuple[str, ...] = (), setup: Callable[[Ctx], Any] | None = None) -> None:
        p.append(Probe(name, 6, "options", refuse(args, mentions, forbid, setup=setup, timeout=timeout,
                                                  warn_ok=warn_ok)))

    add("seed--1", ["run", "ridge", "--seed", "-1"], ("--seed",))
    add("seed-2**70", ["run", "ridge", "--seed", str(2**70)], ("--seed",))
    add("seed-2**64", ["run", "ridge", "--seed", str(2**64)], ("--seed",))
    add("seed-2**32-dry", ["run", "ridge", "--seed", str(2**32), *dry], ("--seed",))
    add("litemind-widths-1e9", ["run", "litemind", "--opt", "widths=1000000000,64,32"], ("widths",), timeout=90)
    add("litemind-widths-1e9-dry", ["run", "litemind", "--opt", "widths=1000000000,64,32", *dry], ("widths",))
    add("mindeye-hidden-1e9-dry", ["run", "mindeye", "--opt", "hidden=1000000000", *dry], ("hidden",))
    add("mindeye-blocks-1e6-dry", ["run", "mindeye", "--opt", "blocks=1000000", *dry], ("blocks",))
    add("litemind-depths-1e7-dry", ["run", "litemind", "--opt", "depths=10000000,1,1", *dry], ("depths",))
    add("litemind-patch-1e9-dry", ["run", "litemind", "--opt", "patch_size=1000000000", *dry], ("patch_size",))
    add("litemind-scale-tiny", ["run", "litemind", "--dataset-opt", "scale=tiny"], ("litemind", "patch"))
    p.append(Probe("ridge-scale-tiny-control", 0, "control",
                   lambda ctx: _control(ctx.run(["run", "ridge", "--dataset-opt", "scale=tiny"], timeout=120))))
    add("launcher-bogus-one-cell", ["run", "ridge", "--launcher", "bogus", *dry], ("--launcher", "bogus"))
    add("launcher-bogus-matrix", ["run", "ridge", "--seed", "0", "--seed", "1", "--launcher", "bogus", *dry],
        ("--launcher",))
    add("opt-repeated-key", ["run", "litemind", "--opt", "pad=zero", "--opt", "pad=drop", *dry], ("pad",))
    add("task-opt-repeated-key", ["run", "ridge", "--task-opt", "way=10", "--task-opt", "way=20", *dry], ("way",))
    add("gallery-size-1e12", ["run", "ridge", "--task", "laion", "--task-opt", "gallery_size=1000000000000"],
        ("gallery_size",), timeout=40)
    add("gallery-size-1e12-dry", ["run", "ridge", "--task", "laion", "--task-opt", "gallery_size=1000000000000",
                                  *dry], ("gallery_size",), timeout=40)
    add("laion-k-1e12-dry", ["run", "ridge", "--task", "laion", "--task-opt", "k=1000000000000", *dry], ("k",))
    add("experiment-empty", ["run", "ridge", "--experiment", ""], ("--experiment",), forbid=("NoneType",))
    add("resume-and-restart", ["run", "ridge", "--resume", "--restart"], ("--resume", "--restart"),
        forbid=("--dataset-opt",))
    add("device-cuda-no-gpu", ["run", "ridge", "--device", "cuda"], ("cuda",), timeout=90)
    add("device-cuda-99", ["run", "ridge", "--device", "cuda:99"], ("cuda",), timeout=90)
    add("epochs-1e12-dry", ["run", "litemind", "--epochs", "1000000000000", *dry], ("--epochs",))
    add("batch-1e12-dry", ["run", "litemind", "--batch-size", "1000000000000", *dry], ("--batch-size",))
    add("checkpoint-every-1e12-dry", ["run", "litemind", "--checkpoint-every", "1000000000000", *dry],
        ("--checkpoint-every",))
    add("early-stopping-1e12-dry", ["run", "litemind", "--early-stopping", "1000000000000", *dry],
        ("--early-stopping",))
    add("epochs-0", ["run", "litemind", "--epochs", "0", *dry], ("--epochs",))
    add("lr-nan", ["run", "litemind", "--lr", "nan", *dry], ("--lr",))
    add("lr-negative", ["run", "litemind", "--lr", "-1", *dry], ("--lr",))
    add("val-fraction-1", ["run", "ridge", "--val-fraction", "1", *dry], ("--val-fraction",))
    add("subject-0", ["run", "ridge", "--subject", "0", *dry], ("--subject",))
    add("subject-99", ["run", "ridge", "--subject", "99", *dry], ("subject",))
    add("subject-2**70", ["run", "ridge", "--subject", str(2**70), *dry], ("--subject",))
    add("precision-fp8", ["run", "ridge", "--precision", "fp8", *dry], ("--precision",))
    add("repeats-bogus", ["run", "ridge", "--repeats", "bogus", *dry], ("--repeats",))
    add("compile-maybe", ["run", "ridge", "--compile", "maybe", *dry], ("--compile",))
    add("budget-huge", ["run", "ridge", "--budget", "huge", *dry], ("--budget",))
    add("device-tpu", ["run", "ridge", "--device", "tpu", *dry], ("--device",))
    add("opt-no-equals", ["run", "ridge", "--opt", "alpha", *dry], ("--opt",))
    add("opt-empty-key", ["run", "ridge", "--opt", "=3", *dry], ("--opt",))
    add("opt-unknown", ["run", "ridge", "--opt", "alpah=3", *dry], ("alpah",))
    add("opt-alpha-nan", ["run", "ridge", "--opt", "alpha=nan", *dry], ("alpha",))
    add("opt-alpha-negative", ["run", "ridge", "--opt", "alpha=-1", *dry], ("alpha",))
    add("opt-alphas-text", ["run", "ridge", "--opt", "alphas=a,b", *dry], ("alphas",))
    add("opt-json-object", ["run", "ridge", "--opt", 'alpha={"a":1}', *dry], ("alpha",))
    add("opt-huge-json-number", ["run", "ridge", "--opt", "alpha=1e999", *dry], ("alpha",))
    add("task-opt-way-1", ["run", "ridge", "--task-opt", "way=1", *dry], ("way",))
    add("task-opt-draws-1e12-dry", ["run", "ridge", "--task-opt", "draws=1000000000000", *dry], ("draws",))
    add("dataset-opt-unknown", ["run", "ridge", "--dataset-opt", "sclae=small", *dry], ("sclae",))
    add("dataset-opt-seed--1", ["run", "ridge", "--dataset-opt", "seed=-1", *dry], ("seed",))
    add("dataset-opt-seed-2**70", ["run", "ridge", "--dataset-opt", f"seed={2**70}", *dry], ("seed",))
    add("target-opt-weights-missing", ["run", "ridge", "--target", "clip-vit-l-14", "--target-opt",
                                       "weights=/nonexistent.pt", *dry], ("weights",))
    add("data-path-missing", ["run", "ridge", "--dataset", "nsd", "--data-path", "/nonexistent/x", *dry],
        ("/nonexistent/x",))
    add("data-path-file", ["run", "ridge", "--dataset", "nsd", "--data-path", "/etc/hostname", *dry],
        ("/etc/hostname",))
    add("nsd-no-data-path", ["run", "ridge", "--dataset", "nsd", *dry], ("--data-path",))
    add("unknown-encoder", ["run", "ridgee", *dry], ("ridge",))
    add("unknown-task", ["run", "ridge", "--task", "retreival", *dry], ("retrieval",))
    add("tracking-uri-bogus-scheme", ["run", "ridge", "--tracking-uri", "bogus://x"], ("bogus",))
    add("tracking-uri-unwritable", ["run", "ridge", "--tracking-uri", "sqlite:////proc/none/mlflow.db"],
        ("/proc/none",))
    add("tracking-uri-unreachable-http", ["run", "ridge", "--tracking-uri", "http://127.0.0.1:9"], ("127.0.0.1",),
        timeout=90)
    add("experiment-10k-chars", ["run", "ridge", "--experiment", "x" * 10000], ("--experiment",))
    add("compare-bogus-run", ["compare", "0123456789abcdef0123456789abcdef"], ("0123456789abcdef",))
    add("compare-bad-format", ["compare", "--format", "xml"], ("--format",))
    add("info-bad-shape", ["info", "litemind", "--target-shape", "0x768"], ("shape",))
    add("info-widths-1e9", ["info", "litemind", "--opt", "widths=1000000000,64,32", "--target-shape", "768"],
        ("widths",))
    add("data-inspect-file", ["data", "inspect", "/etc/hostname"], ("/etc/hostname",))
    add("data-inspect-missing", ["data", "inspect", "/nonexistent/x"], ("/nonexistent/x",))
    add("index-build-out-is-file", ["index", "build", "{data}", "/etc/hostname"], ("/etc/hostname",),
        setup=lambda ctx: _gallery_shards(ctx))
    add("index-build-missing-source", ["index", "build", "/nonexistent/shards", "{cwd}/idx"], ("/nonexistent",))
    add("index-build-kind-bogus", ["index", "build", "{cwd}", "{cwd}/idx", "--kind", "bogus"], ("--kind",))
    add("index-query-object-npy", ["index", "query", "{data}", "--vectors", "{cwd}/q.npy"], ("q.npy",),
        setup=lambda ctx: _object_npy_and_index(ctx))
    add("index-info-missing", ["index", "info", "/nonexistent/idx"], ("/nonexistent/idx",))
    add("index-simulate-size-1e12", ["index", "simulate", "{cwd}/g", "--size", "1000000000000"], ("--size",),
        timeout=40)
    add("targets-build-no-data", ["targets", "build", "--dataset", "nsd"], ("--data-path",))
    add("log-plain-file", ["log", "/etc/hostname"], ("/etc/hostname",))
    add("matrix-missing-spec", ["matrix", "run", "/nonexistent/spec.toml", *dry], ("/nonexistent/spec.toml",))
    add("matrix-spec-is-dir", ["matrix", "run", "/etc", *dry], ("/etc",))
    add("report-nothing", ["report"], ())
    return p


def _gallery_shards(ctx: Ctx) -> Path:
    out = ctx.root / "shards"
    result = ctx.run(["index", "simulate", str(out), "--size", "500", "--shard-rows", "500"], timeout=120)
    if result.rc != 0:
        raise RuntimeError(f"index simulate failed: {result.first_line()}")
    return out


def _object_npy_and_index(ctx: Ctx) -> Path:
    shards = _gallery_shards(ctx)
    index = ctx.root / "index"
    result = ctx.run(["index", "build", str(shards), str(index), "--kind", "flat"], timeout=120)
    if result.rc != 0:
        raise RuntimeError(f"index build failed: {result.first_line()}")
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, None]
    np.save(ctx.cwd / "q.npy", obj, allow_pickle=True)
    return index


def declared_option_probes(shared: Shared) -> list[Probe]:
    """Generated from the executable's own declarations: every size-like int option of every plugin set to
    10**12 (refuse: a bound), every option set below its minimum and every choice to a bogus word (control)."""
    code = textwrap.dedent("""
        import json
        from brainbench.plugins import get_plugins
        out = []
        plugins = get_plugins()
        for kind in ("encoder", "task", "dataset", "target"):
            registry = plugins.registry(kind)
            for name in registry.names():
                try:
                    declared = registry.entry(name).declared_options()
                except Exception:
                    continue
                for o in declared or ():
                    out.append(dict(kind=kind, plugin=name, option=o.name, type=o.type.__name__,
                                    item=getattr(o.item, "__name__", None), minimum=o.minimum,
                                    choices=list(o.choices) if o.choices else None))
        print(json.dumps(out))
    """)
    env = {**os.environ, "BRAINBENCH_HOME": str(shared.root / "declared-home"), **shared.extra_env}
    result = run_process([shared.python, "-c", code], env, shared.root, 120)
    if result.rc != 0:
        return []
    try:
        rows = json.loads(result.out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return []
    flags = {"encoder": "--opt", "task": "--task-opt", "dataset": "--dataset-opt", "target": "--target-opt"}
    size_words = ("width", "depth", "hidden", "size", "block", "epoch", "batch", "worker", "dim", "draws", "k",
                  "layers", "heads", "chunk", "patch", "rows", "tokens", "refine", "nprobe")
    probes: list[Probe] = []
    for row in rows:
        base = _base_command(row)
        if base is None:
            continue
        flag, where = flags[row["kind"]], f"{row['kind']}-{row['plugin']}-{row['option']}"
        is_int = row["type"] == "int" or (row["type"] == "list" and row["item"] == "int")
        name = row["option"]
        capped = name.startswith("figure")  # figure rows are capped at the rows there are: not a size
        if is_int and not capped and any(name == w or name.startswith(w) or name.endswith(w) or f"_{w}" in name
                                         for w in size_words):
            value = "1000000000000" if row["type"] == "int" else "1000000000000,1"
            probes.append(Probe(f"declared-huge-{where}", 6, "options",
                                refuse([*base, flag, f"{name}={value}", "--dry-run"], (name,))))
        if row["minimum"] is not None and row["type"] in ("int", "float"):
            low = row["minimum"] - 1
            probes.append(Probe(f"declared-below-min-{where}", 6, "options",
                                refuse([*base, flag, f"{name}={low:g}", "--dry-run"], (name,))))
        if row["choices"]:
            probes.append(Probe(f"declared-bogus-choice-{where}", 6, "options",
                                refuse([*base, flag, f"{name}=bogus-choice", "--dry-run"], (name,))))
    return probes


def _base_command(row: dict[str, Any]) -> list[str] | None:
    kind, plugin = row["kind"], row["plugin"]
    if kind == "encoder":
        return ["run", plugin]
    if kind == "task":
        return ["run", "ridge", "--task", plugin]
    if kind == "dataset" and plugin.startswith("synthetic"):
        task = "god-zeroshot" if "god" in plugin else "retrieval"
        return ["run", "ridge", "--task", task, "--dataset", plugin]
    if kind == "target" and plugin.startswith("synthetic"):
        return ["run", "ridge", "--target", plugin]
    return None


# ------------------------------------------------------------------------------------------ matrix specs


def spec_probe(name: str, text: str | bytes, mentions: tuple[str, ...] = (), timeout: float = 60,
               warn_ok: tuple[str, ...] = (), dry: bool = True) -> Probe:
    def setup(ctx: Ctx) -> Path:
        path = ctx.cwd / "spec.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    args = ["matrix", "run", "{data}", *(["--dry-run"] if dry else [])]
    return Probe(name, 6, "spec", refuse(args, mentions, setup=setup, timeout=timeout, warn_ok=warn_ok))


BASE = 'name = "p"\n[defaults]\ntask = "retrieval"\n'


def spec_probes() -> list[Probe]:
    big_axes = "\n".join(f'"encoder_options.alpha" = [{", ".join(str(float(i)) for i in range(1, 11))}]'
                         if k == 0 else f'"dataset_options.x{k}" = [{", ".join(map(str, range(10)))}]'
                         for k in range(1))
    million = (BASE + 'encoder = "ridge"\n[axes]\n' + big_axes + "\n"
               + "seed = [" + ", ".join(map(str, range(100))) + "]\n"
               + "subject = [" + ", ".join(map(str, range(1, 1001))) + "]\n")
    return [
        spec_probe("spec-binary", bytes(np.random.default_rng(4).integers(0, 256, 3000, dtype=np.uint8)),
                   ("spec.toml",)),
        spec_probe("spec-utf16", (BASE + 'encoder = "ridge"\n').encode("utf-16"), ("spec.toml",)),
        spec_probe("spec-empty", b"", ("spec.toml",)),
        spec_probe("spec-nested-table-axis", BASE + '[axes]\nencoder = [{ name = "ridge" }]\n', ("encoder",)),
        spec_probe("spec-nested-table-default", BASE + 'encoder = "ridge"\nseed = { a = 1 }\n', ("seed",)),
        spec_probe("spec-seed-text", BASE + 'encoder = "ridge"\n[axes]\nseed = ["x"]\n', ("seed",)),
        spec_probe("spec-seed-negative", BASE + 'encoder = "ridge"\n[axes]\nseed = [-1]\n', ("seed",)),
        spec_probe("spec-seed-2**63", BASE + f'encoder = "ridge"\n[axes]\nseed = [{2**63 - 1}]\n', ("seed",)),
        spec_probe("spec-seed-float", BASE + 'encoder = "ridge"\n[axes]\nseed = [1.5]\n', ("seed",)),
        spec_probe("spec-encoder-and-encoders", BASE + '[axes]\nencoder = ["ridge"]\nencoders = ["litemind"]\n',
                   ("encoder",)),
        spec_probe("spec-seed-and-seeds", BASE + 'encoder = "ridge"\n[axes]\nseed = [0]\nseeds = [1]\n', ("seed",)),
        spec_probe("spec-override-never-matches",
                   BASE + 'encoder = "ridge"\n[[overrides]]\nmatch = { encoder = "ridgee" }\nset = { epochs = 3 }\n',
                   ("ridgee",), warn_ok=("never matches", "matches no cell", "no cell")),
        spec_probe("spec-million-cells", million, ("cells",), timeout=30),
        spec_probe("spec-unknown-top", BASE + 'encoder = "ridge"\nbogus = 1\n', ("bogus",)),
        spec_probe("spec-unknown-field", BASE + 'encoder = "ridge"\nepochz = 1\n', ("epochz",)),
        spec_probe("spec-epochs-negative", BASE + 'encoder = "ridge"\nepochs = -1\n', ("epochs",)),
        spec_probe("spec-epochs-1e12", BASE + 'encoder = "litemind"\nepochs = 1000000000000\n', ("epochs",)),
        spec_probe("spec-batch-1e12", BASE + 'encoder = "litemind"\nbatch_size = 1000000000000\n', ("batch_size",)),
        spec_probe("spec-lr-nan", BASE + 'encoder = "litemind"\nlr = nan\n', ("lr",)),
        spec_probe("spec-lr-text", BASE + 'encoder = "litemind"\nlr = "fast"\n', ("lr",)),
        spec_probe("spec-subject-text", BASE + 'encoder = "ridge"\nsubject = "one"\n', ("subject",)),
        spec_probe("spec-subject-bool", BASE + 'encoder = "ridge"\nsubject = true\n', ("subject",)),
        spec_probe("spec-device-tpu", BASE + 'encoder = "ridge"\ndevice = "tpu"\n', ("device",)),
        spec_probe("spec-precision-fp8", BASE + 'encoder = "ridge"\nprecision = "fp8"\n', ("precision",)),
        spec_probe("spec-repeats-bogus", BASE + 'encoder = "ridge"\nrepeats = "bogus"\n', ("repeats",)),
        spec_probe("spec-val-fraction-2", BASE + 'encoder = "ridge"\nval_fraction = 2\n', ("val_fraction",)),
        spec_probe("spec-val-fraction-text", BASE + 'encoder = "ridge"\nval_fraction = "x"\n', ("val_fraction",)),
        spec_probe("spec-options-not-table", BASE + 'encoder = "ridge"\nencoder_options = 3\n', ("encoder_options",)),
        spec_probe("spec-overrides-not-list", BASE + 'encoder = "ridge"\noverrides = 3\n', ("overrides",)),
        spec_probe("spec-overrides-table", 'name = "p"\noverrides = 3\n[defaults]\nencoder="ridge"\ntask="retrieval"\n',
                   ("overrides",)),
        spec_probe("spec-override-unknown-field",
                   BASE + 'encoder = "ridge"\n[[overrides]]\nmatch = { bogus = 1 }\nset = { epochs = 3 }\n',
                   ("bogus",)),
        spec_probe("spec-override-drop-text",
                   BASE + 'encoder = "ridge"\n[[overrides]]\nmatch = { encoder = "ridge" }\ndrop = "epochs"\n',
                   ("drop",)),
        spec_probe("spec-axes-empty", BASE + 'encoder = "ridge"\n[axes]\nseed = []\n', ("seed",)),
        spec_probe("spec-no-encoder", BASE, ("encoder",)),
        spec_probe("spec-data-path-int", BASE + 'encoder = "ridge"\ndata_path = 5\n', ("data_path",)),
        spec_probe("spec-task-int", 'name="p"\n[defaults]\nencoder = "ridge"\ntask = 5\n', ("task",)),
        spec_probe("spec-encoder-list-in-defaults", BASE + 'encoder = ["ridge"]\n', ("encoder",)),
        spec_probe("spec-litemind-scale-tiny", BASE + 'encoder = "litemind"\n"dataset_options.scale" = "tiny"\n',
                   ("patch",)),
        spec_probe("spec-widths-1e9", BASE + 'encoder = "litemind"\n"encoder_options.widths" = [1000000000, 64, 32]\n',
                   ("widths",)),
        spec_probe("spec-name-table", 'name = { a = 1 }\n[defaults]\nencoder="ridge"\ntask="retrieval"\n', ("name",)),
        spec_probe("spec-log-model-text", BASE + 'encoder = "ridge"\nlog_model = "yes please"\n', ("log_model",)),
        spec_probe("spec-checkpoint-every-0", BASE + 'encoder = "litemind"\ncheckpoint_every = 0\n',
                   ("checkpoint_every",)),
        spec_probe("spec-deeply-nested", BASE + 'encoder = "ridge"\n"encoder_options.alpha" = [[[[1.0]]]]\n',
                   ("alpha",)),
        spec_probe("spec-invalid-toml", "name = \n", ("spec.toml",)),
    ]


# --------------------------------------------------------------------------------------- 1: journals


def _journal_folder(ctx: Ctx, lines: list[dict[str, Any]], name: str = "x/y") -> Path:
    folder = ctx.home / "runs" / name
    folder.mkdir(parents=True)
    (folder / "mlflow-journal.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "UNLOGGED").write_text("test\n")
    return folder


def _copies_of(root: Path, names: tuple[str, ...]) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name in names and "runs" not in p.parts[-4:-1]]


def journal_exfiltration(ctx: Ctx, own_store: bool) -> tuple[str, str]:
    evil = ctx.root / "evil"
    evil.mkdir()
    header = {"uri": f"sqlite:///{evil}/mlflow.db", "experiment": "e", "run_id": "0", "tags": {}}
    lines = [{"header": header},
             {"call": "log_artifact", "args": ["/etc/passwd"], "kwargs": {}, "sent": False},
             {"call": "log_artifact", "args": ["../../../../../../../../etc/hostname"], "kwargs": {}, "sent": False},
             {"end": "FINISHED"}]
    _journal_folder(ctx, lines)
    args = ["log"] + (["--tracking-uri", f"sqlite:///{ctx.cwd}/user.db"] if own_store else [])
    result = ctx.run(args, timeout=90)
    copies = [p for p in ctx.root.rglob("*") if p.is_file() and p.name in ("passwd", "hostname")
              and "home" not in p.relative_to(ctx.root).parts[:1]]
    if copies:
        return "silent", f"copied into the store: {', '.join(str(p.relative_to(ctx.root)) for p in copies[:3])}"
    return _journal_verdict(result)


def _journal_verdict(result: Result) -> tuple[str, str]:
    if result.timed_out:
        return "hang", "timed out"
    if result.has_traceback():
        return "internal", result.first_line()
    if result.rc == 0 and "refus" not in result.text.lower() and "skip" not in result.text.lower():
        return "silent", f"exit 0: {result.first_line()}"
    return "clean", f"exit {result.rc}: {result.first_line()}"


def journal_rewrite_existing(ctx: Ctx) -> tuple[str, str, int]:
    run_id = ctx.copy_store()
    db = ctx.cwd / "mlflow.db"
    with sqlite3.connect(db) as conn:
        before = conn.execute("select key, value from latest_metrics where run_uuid=?", (run_id,)).fetchall()
        status_before = conn.execute("select status from runs where run_uuid=?", (run_id,)).fetchone()[0]
    key = before[0][0] if before else "test_top1"
    header = {"uri": f"sqlite:///{db}", "experiment": "brainbench", "run_id": run_id, "tags": {}}
    lines = [{"header": header},
             {"call": "log_metrics", "args": [{key: 0.999}], "kwargs": {}, "sent": False},
             {"end": "FAILED"}]
    _journal_folder(ctx, lines)
    result = ctx.run(["log"], timeout=90)
    with sqlite3.connect(db) as conn:
        after = dict(conn.execute("select key, value from latest_metrics where run_uuid=?", (run_id,)).fetchall())
        status_after = conn.execute("select status from runs where run_uuid=?", (run_id,)).fetchone()[0]
    changed = after.get(key) != dict(before).get(key) or status_after != status_before
    if changed:
        return ("silent", f"run {run_id[:8]} rewritten: {key} {dict(before).get(key)} -> {after.get(key)}, "
                f"{status_before} -> {status_after}", 1)
    return (*_journal_verdict(result), 0)


def journal_failed_replay(ctx: Ctx) -> tuple[str, str]:
    db = ctx.cwd / "mlflow.db"
    header = {"uri": f"sqlite:///{db}", "experiment": "e", "run_id": "f" * 32, "tags": {}}
    lines = [{"header": header},
             {"call": "log_params", "args": [{"a": 1}], "kwargs": {}, "sent": False},
             {"call": "log_metrics", "args": ["not-a-dict"], "kwargs": {}, "sent": False},
             {"end": "FINISHED"}]
    _journal_folder(ctx, lines)
    results = [ctx.run(["log"], timeout=90) for _ in range(2)]
    _, running = count_runs(ctx.root)
    if running:
        return "silent", f"{running} run(s) left RUNNING after 2 failed replays"
    return _journal_verdict(results[-1])


def journal_one_bad_folder(ctx: Ctx) -> tuple[str, str]:
    db = ctx.cwd / "mlflow.db"
    bad = [{"header": {"uri": f"sqlite:///{db}", "experiment": "e", "run_id": "a" * 32, "tags": {}}},
           {"call": "log_artifact", "args": ["/nonexistent/file"], "kwargs": {}, "sent": False}, {"end": "FINISHED"}]
    good = [{"header": {"uri": f"sqlite:///{db}", "experiment": "e", "run_id": "b" * 32, "tags": {}}},
            {"call": "log_params", "args": [{"a": 1}], "kwargs": {}, "sent": False}, {"end": "FINISHED"}]
    _journal_folder(ctx, bad, "a/1")
    folder = _journal_folder(ctx, good, "b/2")
    result = ctx.run(["log"], timeout=90)
    if (folder / "UNLOGGED").exists():
        return "blocked", f"the good folder was not logged: {result.first_line()}"
    if result.has_traceback():
        return "internal", result.first_line()
    return "clean", f"exit {result.rc}: {result.first_line()}"


def journal_relative_uri(ctx: Ctx) -> tuple[str, str]:
    header = {"uri": "sqlite:///mlflow.db", "experiment": "e", "run_id": "c" * 32, "tags": {}}
    lines = [{"header": header}, {"call": "log_params", "args": [{"a": 1}], "kwargs": {}, "sent": False},
             {"end": "FINISHED"}]
    _journal_folder(ctx, lines)
    elsewhere = ctx.root / "elsewhere"
    elsewhere.mkdir()
    result = ctx.run(["log"], timeout=90, cwd=elsewhere)
    if (elsewhere / "mlflow.db").exists():
        return "silent", "a new mlflow.db was created in the directory brainbench log ran from"
    return _journal_verdict(result)


def journal_garbage_lines(ctx: Ctx) -> tuple[str, str]:
    folder = ctx.home / "runs" / "x" / "y"
    folder.mkdir(parents=True)
    (folder / "mlflow-journal.jsonl").write_bytes(b"\x00\xff\xfe garbage\n{\"header\": 3}\n[1,2]\n")
    (folder / "UNLOGGED").write_text("x\n")
    result = ctx.run(["log"], timeout=60)
    return judge_refusal(result, ("mlflow-journal.jsonl",))


def journal_probes() -> list[Probe]:
    return [
        Probe("journal-artifact-outside-folder-new-store", 1, "journal", lambda ctx: journal_exfiltration(ctx, False)),
        Probe("journal-artifact-outside-folder-user-store", 1, "journal", lambda ctx: journal_exfiltration(ctx, True)),
        Probe("journal-rewrites-existing-run", 1, "journal", journal_rewrite_existing),
        Probe("journal-failed-replay-left-running", 1, "journal", journal_failed_replay),
        Probe("journal-one-bad-folder-stops-others", 1, "journal", journal_one_bad_folder),
        Probe("journal-relative-uri", 1, "journal", journal_relative_uri),
        Probe("journal-garbage-lines", 1, "journal", journal_garbage_lines),
    ]


# ------------------------------------------------------------------------------------ 2, 3: plugins


def _plugin(ctx: Ctx, source: str, entry: str = "evil_plugin", module: str = "evil_plugin") -> dict[str, str]:
    """A distribution on PYTHONPATH whose entry point in the brainbench group names ``module``."""
    site = ctx.root / "site"
    info = site / "evil_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[brainbench]\n{entry} = {module}\n")
    if source:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), ctx.env.get("PYTHONPATH", "")) if p)}


REPLACE_RUN = """
from brainbench import hookimpl

@hookimpl
def register_commands(app):
    @app.command("{name}", context_settings={{"allow_extra_args": True, "ignore_unknown_options": True}})
    def replaced():
        print("PLUGIN CODE RAN")
"""


def command_replacement(ctx: Ctx, name: str, args: list[str]) -> tuple[str, str]:
    env = _plugin(ctx, REPLACE_RUN.format(name=name))
    (ctx.home / "runs").mkdir(exist_ok=True)  # the built-in `log` then has a folder to look in, and exits 0
    result = ctx.run(args, env=env, timeout=120)
    if "PLUGIN CODE RAN" in result.out:
        return "silent", f"the plugin's `{name}` ran (exit {result.rc})"
    if result.timed_out:
        return "hang", ""
    if result.has_traceback():
        return "internal", result.first_line()
    if result.rc != 0:
        return "blocked", f"exit {result.rc}: {result.first_line()}"
    return "clean", "built-in command ran" + ("; warned" if "evil" in result.err.lower() else "")


def works_despite_plugin(source: str, args: list[str], check: Callable[[Result], bool], timeout: float = 60,
                         entry: str = "evil_plugin", module: str = "evil_plugin",
                         need_warning: bool = True) -> Callable[[Ctx], tuple[str, str]]:
    """The command must still work (``check``) and the broken plugin be named in a warning (``need_warning``)."""

    def body(ctx: Ctx) -> tuple[str, str]:
        if args and args[0] == "compare":
            ctx.copy_store()
        env = _plugin(ctx, source, entry, module)
        result = ctx.run(args, env=env, timeout=timeout)
        if result.timed_out:
            return "hang", f"{' '.join(args[:3])} still running after {result.seconds:.0f}s"
        if result.has_traceback():
            return "internal", result.first_line()
        if result.rc not in (0, None) and not check(result):
            return "blocked", f"exit {result.rc}: {result.first_line()}"
        if not check(result):
            return "silent", f"exit {result.rc}, output wrong or missing: {result.first_line()}"
        warned = "evil" in result.err.lower() or entry in result.err.lower() or not need_warning
        return ("clean", "worked, plugin named in a warning") if warned else ("silent", "worked, no warning")

    return body


def _is_json(result: Result) -> bool:
    try:
        json.loads(result.out)
        return True
    except json.JSONDecodeError:
        return False


def _printed_cells(result: Result) -> bool:
    return result.rc == 0 and "ridge" in result.out


def plugin_probes() -> list[Probe]:
    dry = ["run", "ridge", "--dry-run"]
    return [
        Probe("plugin-replaces-run", 2, "plugins",
              lambda ctx: command_replacement(ctx, "run", ["run", "ridge", "--task", "retrieval", "--dry-run"])),
        Probe("plugin-replaces-log", 2, "plugins", lambda ctx: command_replacement(ctx, "log", ["log"])),
        Probe("plugin-replaces-plugins", 2, "plugins", lambda ctx: command_replacement(ctx, "plugins", ["plugins"])),
        Probe("plugin-sleeps-at-import", 3, "plugins",  # --version may load no plugin at all: no warning needed
              works_despite_plugin("import time\ntime.sleep(3600)\n", ["--version"],
                                   lambda r: "brainbench" in r.out, timeout=20, need_warning=False)),
        Probe("plugin-sleeps-at-import-run", 3, "plugins",
              works_despite_plugin("import time\ntime.sleep(3600)\n", dry, _printed_cells, timeout=30)),
        Probe("plugin-sys-exit-0-at-import", 3, "plugins",
              works_despite_plugin("import sys\nsys.exit(0)\n", dry, _printed_cells)),
        Probe("plugin-sys-exit-3-at-import", 3, "plugins",
              works_despite_plugin("import sys\nsys.exit(3)\n", dry, _printed_cells)),
        Probe("plugin-keyboardinterrupt-at-import", 3, "plugins",
              works_despite_plugin("raise KeyboardInterrupt\n", dry, _printed_cells)),
        Probe("plugin-prints-at-import", 3, "plugins",
              works_despite_plugin("print('hello from a plugin')\n", ["compare", "-f", "json"], _is_json)),
        Probe("plugin-hookimpl-wrong-argument", 3, "plugins",
              works_despite_plugin("from brainbench import hookimpl\n@hookimpl\ndef register_encoders(regster):\n"
                                   "    pass\n", dry, _printed_cells)),
        Probe("plugin-entry-point-to-builtin-module", 3, "plugins",
              works_despite_plugin("", dry, _printed_cells, entry="evil_ridge", module="brainbench_ridge")),
        Probe("plugin-misspelled-hook", 3, "plugins",
              works_despite_plugin("from brainbench import hookimpl\n@hookimpl\ndef register_encoderz(register):\n"
                                   "    pass\n", dry, _printed_cells)),
        Probe("plugin-import-error", 3, "plugins",
              works_despite_plugin("import no_such_module_xyz\n", dry, _printed_cells)),
        Probe("plugin-missing-module", 3, "plugins",
              works_despite_plugin("", dry, _printed_cells, module="no_such_module_abc")),
        Probe("plugin-registers-builtin-name", 3, "plugins",
              works_despite_plugin("from brainbench import hookimpl\n@hookimpl\ndef register_encoders(register):\n"
                                   "    register('ridge', lambda **o: None)\n", dry, _printed_cells)),
        Probe("plugin-register-raises", 3, "plugins",
              works_despite_plugin("from brainbench import hookimpl\n@hookimpl\ndef register_encoders(register):\n"
                                   "    raise RuntimeError('boom')\n", dry, _printed_cells)),
        Probe("plugin-register-commands-raises", 3, "plugins",
              works_despite_plugin("from brainbench import hookimpl\n@hookimpl\ndef register_commands(app):\n"
                                   "    raise RuntimeError('boom')\n", dry, _printed_cells)),
        Probe("plugin-syntax-error", 3, "plugins", works_despite_plugin("def (:\n", dry, _printed_cells)),
        Probe("plugin-writes-stderr-at-import", 3, "plugins",
              works_despite_plugin("import sys\nsys.stderr.write('noise\\n')\n", ["compare", "-f", "json"], _is_json,
                                   need_warning=False)),
    ]


# ---------------------------------------------------------------------------------- 4: the index server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``brainbench index serve`` of a small flat index, started once for all server probes."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.port = _free_port()
        index = _object_npy_and_index(ctx)
        self.process = subprocess.Popen(
            [ctx.shared.brainbench, "index", "serve", str(index), "--port", str(self.port)], env=ctx.env,
            cwd=ctx.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/indices-list", timeout=2).read()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("index serve exited: " + self.process.stderr.read()[-300:]) from None
                time.sleep(0.3)
        raise RuntimeError("index serve did not answer within 60 s")

    def post(self, body: bytes, timeout: float = 10) -> tuple[int | None, str]:
        request = urllib.request.Request(self.url + "/knn-service", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, answer.read(2000).decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read(2000).decode(errors="replace")
        except TimeoutError:
            return None, "timeout"
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            return -1, f"{type(error).__name__}: {error}"

    def rss_kb(self) -> int:
        return _status_field(self.process.pid, "VmRSS")

    def threads(self) -> int:
        return _status_field(self.process.pid, "Threads")

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def _status_field(pid: int, name: str) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            total = int(line.split()[1])
    return total


def _body(**changes: Any) -> bytes:
    body = {"embedding_input": [0.1] * 768, "modality": "image", "indice_name": "laion5B-L-14",
            "num_images": 5, "num_result_ids": 5}
    body.update(changes)
    return json.dumps(body).encode()


SERVER_REQUESTS: list[tuple[str, Callable[[], bytes]]] = [
    ("list-body", lambda: b"[1, 2, 3]"),
    ("not-json", lambda: b"{not json"),
    ("empty-body", lambda: b""),
    ("embedding-3d", lambda: _body(embedding_input=[[[0.1] * 768]])),
    ("embedding-2d", lambda: _body(embedding_input=[[0.1] * 768, [0.2] * 768])),
    ("embedding-nan", lambda: json.dumps({**json.loads(_body()), "embedding_input": [float("nan")] * 768}).encode()),
    ("embedding-wrong-dim", lambda: _body(embedding_input=[0.1] * 10)),
    ("embedding-text", lambda: _body(embedding_input="hello")),
    ("embedding-missing", lambda: _body(embedding_input=None)),
    ("num-images-0", lambda: _body(num_images=0)),
    ("num-images--5", lambda: _body(num_images=-5)),
    ("num-images-1e9", lambda: _body(num_images=1_000_000_000)),
    ("num-images-text", lambda: _body(num_images="many")),
    ("num-images-float", lambda: _body(num_images=2.5)),
    ("wrong-indice", lambda: _body(indice_name="other")),
    ("body-is-string", lambda: b'"hello"'),
]


def server_probes() -> list[Probe]:
    """One probe starts the server and sends every malformed request; each request is its own case."""
    return [Probe("index-server", 4, "server", _server_campaign)]


SERVER_CASES: dict[str, Outcome] = {}


def _server_campaign(ctx: Ctx) -> tuple[str, str]:
    try:
        server = Server(ctx)
    except RuntimeError as error:
        return "skipped", str(error)
    try:
        for name, make in SERVER_REQUESTS:
            started = time.perf_counter()
            status, text = server.post(make(), timeout=15)
            if status is None:
                verdict = ("hang", "no answer in 15 s")
            elif status == 400 and "error" in text:
                verdict = ("clean", f"400 {text[:100]}")
            elif status == 200 and name not in ("num-images-1e9",):
                verdict = ("silent", f"200 {text[:80]}")
            elif status == 200:
                verdict = ("silent", f"200 after {time.perf_counter() - started:.1f}s")
            elif status == -1:
                verdict = ("internal", f"connection closed with no answer ({text[:80]})")
            else:
                verdict = ("internal" if status >= 500 else "clean", f"{status} {text[:80]}")
            SERVER_CASES[f"server-{name}"] = Outcome(*verdict, seconds=time.perf_counter() - started)
        _server_limits(server)
    finally:
        server.close()
    bad = sum(1 for o in SERVER_CASES.values() if o.outcome != "clean")
    return ("clean" if not bad else "silent"), f"{bad} of {len(SERVER_CASES)} server cases not clean"


def _server_limits(server: Server) -> None:
    started = time.perf_counter()
    status, _ = server.post(_body(num_images=1_000_000), timeout=30)
    took = time.perf_counter() - started
    SERVER_CASES["server-num-images-1e6"] = Outcome(
        "clean" if status is not None and 400 <= status < 500 else ("hang" if status is None else "silent"),
        f"{status} after {took:.1f}s", seconds=took)
    # a big body (20 MB; the 200 MB cost +146 MB): is it refused before it is read?
    before = server.rss_kb()
    big = b'{"embedding_input": [' + b"0.1," * 5_000_000 + b'0.1], "indice_name": "laion5B-L-14"}'
    started = time.perf_counter()
    status, text = server.post(big, timeout=60)
    grown = (server.rss_kb() - before) / 1024
    # 400/413, or the connection closed while the client still sent (refused before reading): no growth either way
    verdict = ("clean", f"{status} for a {len(big) / 1e6:.0f} MB body, +{grown:.0f} MB RSS") if (
        status in (400, 413, -1) and grown < 20) else ("silent", f"{status} for a {len(big) / 1e6:.0f} MB body, "
                                                             f"+{grown:.0f} MB RSS")
    SERVER_CASES["server-body-20MB"] = Outcome(*verdict, seconds=time.perf_counter() - started)
    for length in ("-1", str(10**12)):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(f"POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
            s.settimeout(10)
            try:
                answer = s.recv(200).decode(errors="replace")
            except TimeoutError:
                answer = None
        if answer is None:
            verdict = ("hang", "no answer in 10 s (a thread held)")
        elif answer.startswith("HTTP/1.") and answer.split()[1] in ("400", "411", "413"):
            verdict = ("clean", answer.splitlines()[0])
        elif not answer:
            verdict = ("internal", "closed with no answer")
        else:
            verdict = ("silent", answer.splitlines()[0])
        SERVER_CASES[f"server-content-length-{length}"] = Outcome(*verdict, seconds=time.perf_counter() - started)
    # idle half-sent requests: are they dropped?
    sockets = []
    baseline = server.threads()
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        sockets.append(s)
    time.sleep(20)
    held = server.threads() - baseline
    for s in sockets:
        s.close()
    SERVER_CASES["server-idle-half-sent"] = Outcome(
        "hang" if held > 50 else "clean", f"{held} extra threads held 20 s after 100 half-sent requests", seconds=20)


# ------------------------------------------------------------------------------- 7: liveness, leftovers


def _poll_running(db: Path, deadline: float) -> str | None:
    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    row = conn.execute("select run_uuid from runs where status='RUNNING'").fetchone()
                if row:
                    return row[0]
            except sqlite3.Error:
                pass
        time.sleep(0.5)
    return None


def liveness_pid_namespace(ctx: Ctx) -> tuple[str, str]:
    if shutil.which("unshare") is None:
        return "skipped", "no unshare"
    args = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", ctx.shared.brainbench, "run",
            "litemind", "--epochs", "400", "--checkpoint-every", "400"]
    live = subprocess.Popen(args, env=ctx.env, cwd=ctx.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        run_id = _poll_running(ctx.cwd / "mlflow.db", time.time() + 90)
        if run_id is None:
            err = live.stderr.read()[-200:] if live.poll() is not None else ""
            return "skipped", f"the namespaced run never showed as RUNNING {err}"
        other = ctx.run(["run", "ridge"], timeout=120)
        with sqlite3.connect(ctx.cwd / "mlflow.db") as conn:
            status = conn.execute("select status from runs where run_uuid=?", (run_id,)).fetchone()[0]
        alive = live.poll() is None
        if status == "KILLED" and alive:
            return "silent", "a live run in another PID namespace was marked KILLED while it trained"
        if other.has_traceback():
            return "internal", other.first_line()
        return "clean", f"the live run stayed {status}"
    finally:
        try:
            os.killpg(live.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        live.wait()


def leftover_checkpoint_temp(ctx: Ctx) -> tuple[str, str]:
    args = ["run", "litemind", "--epochs", "6", "--checkpoint-every", "1"]
    first = subprocess.Popen([ctx.shared.brainbench, *args], env=ctx.env, cwd=ctx.cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    checkpoint = None
    while time.time() < deadline and checkpoint is None:
        found = list((ctx.home / "runs").rglob("last.pt")) if (ctx.home / "runs").is_dir() else []
        checkpoint = found[0] if found else None
        time.sleep(0.3)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    if checkpoint is None:
        return "skipped", "no checkpoint appeared within 120 s"
    leftover = checkpoint.with_name(f".{checkpoint.name}.4242.tmp")
    leftover.write_bytes(b"\0" * 1_000_000)  # what a kill in the middle of a checkpoint write leaves
    resumed = ctx.run([*args, "--resume"], timeout=180)
    left = [p for p in (ctx.home / "runs").rglob("*.tmp")]
    if resumed.has_traceback():
        return "internal", resumed.first_line()
    if left:
        return "silent", f"{len(left)} temp file(s) of a killed checkpoint left: {left[0].name}"
    return "clean", f"resumed (exit {resumed.rc}); no temp file left"


def disk_full_at_checkpoint(ctx: Ctx) -> tuple[str, str]:
    if shutil.which("unshare") is None:
        return "skipped", "no unshare"
    small = ctx.root / "small"
    small.mkdir()
    (small / "..keep").touch()
    inner = (f"mount -t tmpfs -o size=600k tmpfs {small} && mkdir -p {small}/home && "
             f"ln -s {ctx.home}/synthetic {small}/home/synthetic && "
             f"BRAINBENCH_HOME={small}/home exec {ctx.shared.brainbench} run litemind --epochs 3 --checkpoint-every 1")
    result = run_process(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", inner], ctx.env, ctx.cwd,
                         180)
    if "mount:" in result.err and result.rc not in (0, None) and "tmpfs" in result.err:
        return "skipped", result.first_line()
    tracebacks = result.text.count("Traceback (most recent call last)")
    if result.timed_out:
        return "hang", "timed out"
    if result.has_traceback():
        return "internal", f"{tracebacks} traceback(s): {result.first_line()}"
    if result.rc == 0:
        return "silent", "a full disk at a checkpoint went unnoticed"
    return "clean", f"exit {result.rc}: {result.first_line()}"


def leftover_probes() -> list[Probe]:
    return [
        Probe("liveness-other-pid-namespace", 7, "leftovers", liveness_pid_namespace),
        Probe("leftover-checkpoint-temp-files", 7, "leftovers", leftover_checkpoint_temp),
        Probe("disk-full-at-checkpoint", 7, "leftovers", disk_full_at_checkpoint),
    ]


# ---------------------------------------------------------------------------------- 8: logged models


def model_code_runs_on_load(ctx: Ctx) -> tuple[str, str]:
    result = ctx.run(["run", "ridge", "--log-model"], timeout=180)
    if result.rc != 0:
        return "skipped", f"ridge --log-model failed: {result.first_line()}"
    code = [p for p in ctx.cwd.rglob("mlflow_pyfunc.py")]
    if not code:
        return "skipped", "no mlflow_pyfunc.py in the logged model"
    marker = ctx.root / "CODE-RAN"
    for path in code:
        with path.open("a") as handle:
            handle.write(f"\nopen({str(marker)!r}, 'w').write('x')\n")
    with sqlite3.connect(ctx.cwd / "mlflow.db") as conn:
        run_id = conn.execute("select run_uuid from runs where status='FINISHED'").fetchone()[0]
    loaded = ctx.python(
        "import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db'); "
        f"mlflow.pyfunc.load_model('runs:/{run_id}/model')", timeout=180)
    if marker.exists():
        return "silent", "a line appended to the model folder's mlflow_pyfunc.py ran on load"
    if loaded.rc != 0 and "hash" in loaded.text.lower():
        return "clean", "the loader refused the changed file"
    return "clean", f"no code ran (exit {loaded.rc})"


def ridge_object_npz(ctx: Ctx) -> tuple[str, str]:
    path = ctx.cwd / "model.npz"
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, None]
    np.savez(path, weights=obj, bias=obj, voxel_mean=obj, voxel_scale=obj, target_shape=obj, alpha=obj)
    code = ("from brainbench.errors import BrainbenchError\n"
            "from brainbench_ridge.encoder import FittedRidge\n"
            "try:\n    FittedRidge.load(__import__('pathlib').Path('model.npz'))\n"
            "except BrainbenchError as e:\n    print('CLEAN', e)\n"
            "except Exception as e:\n    print('BARE', type(e).__name__, e)\n")
    result = ctx.python(code, timeout=60)
    if "CLEAN" in result.out:
        return ("clean", result.out.strip()[:160]) if "model.npz" in result.out else ("misleading", result.out[:160])
    if "BARE" in result.out:
        return "internal", result.out.strip()[:160]
    return "silent", f"loaded an object-array model.npz: {result.first_line()}"


def model_probes() -> list[Probe]:
    return [
        Probe("model-folder-code-runs-on-load", 8, "model", model_code_runs_on_load),
        Probe("ridge-object-array-model-npz", 6, "model", ridge_object_npz),
    ]


# ---------------------------------------------------------------------------------- 5: busy store (slow)


def busy_store(ctx: Ctx) -> tuple[str, str]:
    db = ctx.cwd / "mlflow.db"
    first = ctx.run(["run", "ridge"], timeout=180)
    if first.rc != 0:
        return "skipped", first.first_line()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "time.sleep(8)\nc.execute('BEGIN EXCLUSIVE')\ntime.sleep(70)\nc.execute('COMMIT')\n")])
    result = ctx.run(["run", "ridge", "--seed", "1"], timeout=240)
    holder.kill()
    holder.wait()
    with sqlite3.connect(db) as conn:
        statuses = [s for (s,) in conn.execute("select status from runs")]
    if statuses.count("FINISHED") < 2:
        return "silent", f"a busy store was treated as lost: statuses {statuses}, exit {result.rc}"
    return "clean", "the run waited for the busy store"


# ------------------------------------------------------------------------------------------- campaign


def catalogue(shared: Shared, slow: bool) -> list[Probe]:
    probes = [*journal_probes(), *plugin_probes(), *server_probes(), *data_probes(), *god_probes(),
              *litemind_npy_probes(), *options_probes(), *declared_option_probes(shared), *spec_probes(),
              *leftover_probes(), *model_probes()]
    probes.append(Probe("nsd-good-folder-control", 0, "control",
                        lambda ctx: _control(ctx.run([a.replace("{data}", str(write_nsd(ctx.root / "nsd")))
                                                      for a in NSD_RUN], timeout=120))))
    if slow:
        probes.append(Probe("busy-store-70s", 5, "store", busy_store, slow=True))
    return probes


def _control(result: Result) -> tuple[str, str]:
    if result.rc == 0:
        return "clean", "the good folder ran"
    return "internal", f"control failed: {result.first_line()}"


def prepare(shared: Shared) -> None:
    """The warm home and the one-run store every probe may copy."""
    shared.warm_home.mkdir(parents=True)
    shared.store_dir.mkdir(parents=True)
    env = {**os.environ, "BRAINBENCH_HOME": str(shared.warm_home), "OMP_NUM_THREADS": "1", **shared.extra_env}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_process([shared.brainbench, "run", "ridge", "--task", "retrieval"], env, shared.store_dir, 300)
    shared.ready = result.rc == 0
    shared.note = "" if shared.ready else f"warm-up run failed: {result.first_line()}"
    shutil.rmtree(shared.warm_home / "runs", ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brainbench", required=True, help="The brainbench executable to attack.")
    parser.add_argument("--jobs", type=int, default=3, help="Probes run at once.")
    parser.add_argument("--only", nargs="*", default=None, help="Run only probes whose name contains a word.")
    parser.add_argument("--area", nargs="*", default=None,
                        help="Run only these areas: journal plugins server data options spec leftovers model control.")
    parser.add_argument("--json", type=Path, default=None, help="Write every outcome here.")
    parser.add_argument("--slow", action="store_true", help="Add the slow busy-store probe (~2 minutes).")
    parser.add_argument("--list", action="store_true", help="List the probes and exit.")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Set for every probe, e.g. PYTHONPATH=SITE:OLD:OLD/plugins to attack an older "
                             "checkout OLD (git archive COMMIT) with this venv; SITE holds a brainbench-*.dist-info "
                             "with the older entry points, so plugins it did not have stay out.")
    args = parser.parse_args()
    executable = shutil.which(args.brainbench) or args.brainbench
    python = str(Path(executable).with_name("python"))
    base = Path(tempfile.mkdtemp(prefix="red-team-"))
    extra = dict(item.split("=", 1) for item in args.env)
    shared = Shared(base / "shared", executable, python, extra)
    shared.root.mkdir()
    probes = catalogue(shared, args.slow)
    if args.only:
        probes = [p for p in probes if any(word in p.name for word in args.only)]
    if args.area:
        probes = [p for p in probes if p.area in args.area]
    if args.list:
        for probe in probes:
            print(f"{probe.item}  {probe.area:9s} {probe.name}")
        return 0
    started = time.perf_counter()
    prepare(shared)
    if not shared.ready:
        print(f"warning: {shared.note}", file=sys.stderr)
    results: dict[str, Outcome] = {}
    lock = threading.Lock()

    def one(probe: Probe) -> None:
        outcome = execute(probe, shared, base)
        with lock:
            results[probe.name] = outcome
            print(f"{outcome.outcome:10s} {outcome.seconds:6.1f}s  {probe.name}: {outcome.note}", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, probes))
    by_name = {p.name: p for p in probes}
    cases: list[tuple[str, int, Outcome]] = []
    for name, outcome in results.items():
        if name == "index-server" and SERVER_CASES:
            cases += [(case, 4, o) for case, o in SERVER_CASES.items()]
        else:
            cases.append((name, by_name[name].item, outcome))
    print_summary(cases, time.perf_counter() - started, executable)
    if args.json:
        args.json.write_text(json.dumps(
            {"brainbench": executable, "seconds": time.perf_counter() - started,
             "cases": [{"name": n, "item": i, **o.__dict__} for n, i, o in cases]}, indent=1))
    shutil.rmtree(base, ignore_errors=True)
    return 0


def print_summary(cases: list[tuple[str, int, Outcome]], seconds: float, executable: str) -> None:
    print(f"\n## red team against {executable} ({seconds:.0f} s)\n")
    header = "| item | cases | clean | internal | silent | hang | misleading | blocked | skipped | FAILED runs | " \
             "RUNNING left | data lost |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    items = sorted({item for _, item, _ in cases})
    rows = [(str(item), [o for _, i, o in cases if i == item]) for item in items]
    rows.append(("all", [o for _, _, o in cases]))
    for label, outcomes in rows:
        counts = Counter(o.outcome for o in outcomes)
        print(f"| {label} | {len(outcomes)} | " + " | ".join(str(counts.get(k, 0)) for k in OUTCOMES) +
              f" | {sum(o.failed_runs for o in outcomes)} | {sum(o.running_runs for o in outcomes)} | "
              f"{sum(o.data_lost for o in outcomes)} |")
    print("\nnot clean (or leaving runs behind):")
    for name, item, outcome in sorted(cases, key=lambda c: (c[1], c[0])):
        if outcome.outcome != "clean" or outcome.failed_runs or outcome.running_runs:
            print(f"  [{item}] {outcome.outcome:10s} {name}: {outcome.note}"
                  + (f" (FAILED runs {outcome.failed_runs})" if outcome.failed_runs else "")
                  + (f" (RUNNING left {outcome.running_runs})" if outcome.running_runs else ""))


if __name__ == "__main__":
    sys.exit(main())
