"""A user's mistakes at the command line: what each prints and the exit status it ends with.

    python benchmarks/cli_mistakes.py [--pythonpath DIR]

Runs the installed console script (next to this Python) once per mistake in a fresh working folder, with
a fresh BRAINBENCH_HOME and a SQLite store in that folder, and prints a markdown table: command | exit
status | first line printed. ``--pythonpath DIR`` puts DIR first on PYTHONPATH (e.g. an older typer and
click installed with ``pip install --target DIR``). tests/test_cli_errors.py runs the same list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BAD_SPEC = """name = "bad"
[defaults]
task = "retrieval"
"dataset_options.scale" = "tiny"
[axes]
encoder = ["ridge", "mindeye"]
"encoder_options.hidden" = [256]
"""
MISSPELLED_SPEC = """name = "misspelled"
[defaults]
encoder = "ridge"
task = "retrieval"
epochs = 2
[axes]
seeds = [0, 1]
"encoder_option.alpha" = [1.0]
"""


@dataclass(frozen=True)
class Mistake:
    args: tuple[str, ...]
    expect: tuple[str, ...]  # texts the message must contain (the option, the value, the closest name)


MISTAKES: tuple[Mistake, ...] = (
    Mistake(("run", "ridge", "--foo"), ("--foo",)),
    Mistake(("run",), ("ENCODERS", "ridge")),
    Mistake(("run", "ridge", "--seed", "x"), ("--seed", "'x'")),
    Mistake(("compare", "--format", "xml"), ("--format", "'xml'", "csv")),
    Mistake(("run", "ridge", "mindeye", "--workers", "2"), ("--workers",)),
    Mistake(("run", "ridge", "--opt", "alpah=3"), ("alpah", "did you mean 'alpha'")),
    Mistake(("run", "ridge", "--task", "laion", "--task-opt", "pooling=max"), ("pooling", "max", "cls")),
    Mistake(("run", "ridge", "--task", "laion", "--task-opt", "k=0"), ("k=0", ">= 1")),
    Mistake(
        ("run", "ridge", "--task", "laion", "--task-opt", "index=/tmp/none", "--task-opt", "remote=http://127.0.0.1:9"),
        ("index", "remote"),
    ),
    Mistake(("run", "litemind", "--lr", "nan"), ("--lr", "nan")),
    Mistake(("run", "litemind", "--lr", "inf"), ("--lr", "inf")),
    Mistake(("run", "ridge", "--task", "laion", "--task-opt", "galery_seed=3"), ("galery_seed", "gallery_seed")),
    Mistake(("run", "ridge", "--opt", "hidden=256"), ("hidden", "ridge")),
    Mistake(("run", "ridge", "litemind", "--opt", "hiden=256"), ("hiden",)),
    Mistake(("run", "ridge", "--opt", "alpha=abc"), ("alpha=abc", "number")),
    Mistake(("run", "rdge"), ("rdge", "did you mean 'ridge'")),
    Mistake(("run", "ridge", "--task", "retrievl"), ("retrievl", "did you mean 'retrieval'")),
    Mistake(("run", "ridge", "--dataset", "synthetic-nds"), ("synthetic-nds", "synthetic-nsd")),
    Mistake(("run", "ridge", "--dataset-opt", "scale=huge"), ("--dataset-opt scale=huge", "small")),
    Mistake(("run", "ridge", "--target-opt", "tokns=true"), ("--target-opt tokns=", "normalize")),
    Mistake(("run", "ridge", "--subject", "9"), ("subject 9",)),
    Mistake(("run", "ridge", "--repeats", "avg"), ("--repeats", "'avg'", "average-voxels")),
    Mistake(("run", "ridge", "--device", "gpu"), ("--device", "'gpu'")),
    Mistake(("run", "ridge", "--epochs", "0"), ("--epochs=0", ">= 1")),
    Mistake(("run", "ridge", "mindeye", "--launcher", "slurm"), ("--launcher", "'slurm'", "local")),
    Mistake(("info", "litemnd"), ("litemnd", "did you mean 'litemind'")),
    Mistake(("info", "ridge", "--opt", "alpah=1"), ("alpah", "alpha")),
    Mistake(("list", "encoder"), ("'encoder'", "encoders")),
    Mistake(("rn",), ("'rn'", "run")),
    Mistake(("matrix", "run", "missing.toml"), ("missing.toml",)),
    Mistake(("matrix", "run", "bad.toml", "--dry-run"), ("hidden", "ridge")),
    Mistake(("matrix", "run", "misspelled.toml"), ("encoder_option.alpha",)),
    Mistake(("data", "inspect", "/nonexistent/nsd"), ("/nonexistent/nsd",)),
)


def console_script() -> str:
    script = Path(sys.executable).with_name("brainbench")
    return str(script) if script.exists() else "brainbench"


def run_mistake(mistake: Mistake, folder: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    (folder / "bad.toml").write_text(BAD_SPEC)
    (folder / "misspelled.toml").write_text(MISSPELLED_SPEC)
    env = {**os.environ, "BRAINBENCH_HOME": str(folder / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/m.db"}
    env.pop("BRAINBENCH_DEBUG", None)
    env["COLUMNS"] = "200"  # one message line stays one line
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [console_script(), *mistake.args], capture_output=True, text=True, env=env, cwd=folder, timeout=300
    )


def first_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return lines[0] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythonpath", default=None)
    args = parser.parse_args()
    print("| command | exit status | first line printed |")
    print("|---|---|---|")
    for mistake in MISTAKES:
        with tempfile.TemporaryDirectory() as folder:
            result = run_mistake(mistake, Path(folder), args.pythonpath)
        command = "brainbench " + " ".join(mistake.args)
        print(f"| `{command}` | {result.returncode} | {first_line(result).replace('|', '/')} |")


if __name__ == "__main__":
    main()
