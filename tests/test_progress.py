"""Training progress as a user sees it: what a run expects to take, then per epoch the loss and the time left,
for a single run and inside a matrix's cells (which used to print nothing until they finished)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from brainbench.reporting import LineReporter, StepClock, duration
from tests.conftest import run_cli

TINY_LITEMIND = ("litemind", "--task", "retrieval", "--dataset-opt", "scale=tiny", "--epochs", "3", "--device", "cpu",
                 "--opt", "patch_size=20", "--opt", "widths=32,16,8", "--threads", "1")


def test_durations_read_plainly() -> None:
    assert duration(3.2) == "3 s"
    assert duration(95) == "1 min 35 s"
    assert duration(7300) == "2 h 01 min"


def test_the_clock_projects_the_pace_so_far_and_ignores_resumed_steps() -> None:
    clock = StepClock(total=10)
    clock.advance(4)  # resumed after 4 steps: not timed in this process
    clock.started -= 6.0
    clock.advance(2)
    assert abs(clock.eta() - 3.0 * (10 - 6)) < 0.1  # 2 steps in 6 s -> 4 steps left at 3 s a step


def test_a_cell_prints_its_first_and_last_epoch_and_at_most_one_line_per_interval() -> None:
    out = io.StringIO()
    reporter = LineReporter("ridge/x/sub1/seed0", Console(file=out, width=200), every=3600)
    with reporter.progress("training", total=4) as clock:
        for epoch in range(1, 5):
            clock.advance(1)
            clock.update(epoch=f"{epoch}/4")
            reporter.epoch_end(epoch, {"train_loss": 1.0 / epoch})
    lines = out.getvalue().splitlines()
    epochs = [line for line in lines if " epoch " in line]
    assert [re.search(r"epoch (\S+)", line).group(1) for line in epochs] == ["1/4", "4/4"]
    assert all(line.startswith("[ridge/x/sub1/seed0] ") for line in lines)
    assert "ETA" in epochs[0] and "train_loss=0.25" in epochs[1]


def check_progress(stderr: str, prefix: str = "") -> None:
    start = re.escape(prefix)
    assert re.search(start + r"expected ~\d+ (s|min)", stderr), stderr
    assert re.search(start + r"epoch 1/3  train_loss=[\d.]+  lr=\S+  \| \d+ s elapsed, ETA \d+ s", stderr), stderr
    assert re.search(start + r"epoch 3/3  train_loss=[\d.]+", stderr), stderr
    assert stderr.index("expected ~") < stderr.index("epoch 1/3")  # said before the training goes on


def test_a_single_run_says_what_it_expects_then_each_epoch_with_loss_and_eta(tmp_path: Path) -> None:
    done = run_cli("run", *TINY_LITEMIND, cwd=tmp_path, env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    check_progress(done.stderr)


def test_a_matrix_cell_shows_its_progress_while_it_trains(tmp_path: Path) -> None:
    done = subprocess.run(  # one stream, in the order a terminal shows it
        [sys.executable, "-m", "brainbench.cli.app", "run", *TINY_LITEMIND, "--seed", "0", "--seed", "1"],
        cwd=tmp_path, env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    output = done.stdout
    assert done.returncode == 0, output
    for seed in (0, 1):
        check_progress(output, f"[litemind/retrieval/sub1/seed{seed}] ")
    # the progress comes while the cell runs, before the matrix reports it finished
    assert output.index("[litemind/retrieval/sub1/seed0] epoch 1/3") < output.index("[1/2] litemind")
