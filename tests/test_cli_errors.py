"""A user's mistakes through the installed console script: status 2, one or two lines, no traceback.

The same list (benchmarks/cli_mistakes.py) runs against the newest typer installed here and against the
declared minimum (typer 0.12 with its click, installed with pip into a folder put first on PYTHONPATH).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("cli_mistakes", REPO / "benchmarks" / "cli_mistakes.py")
mistakes = importlib.util.module_from_spec(spec)
sys.modules["cli_mistakes"] = mistakes  # dataclasses look their module up
spec.loader.exec_module(mistakes)

MINIMUM_TYPER = ("typer==0.12.5", "click==8.1.7")


def _check(result: subprocess.CompletedProcess[str], mistake) -> None:
    shown = result.stderr + result.stdout
    assert result.returncode == 2, shown
    assert "Traceback" not in shown, shown
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Warning:")]
    assert 1 <= len(lines) <= 2, shown
    for text in mistake.expect:
        assert text in shown, f"{text!r} not in {shown!r}"


@pytest.mark.parametrize("mistake", mistakes.MISTAKES, ids=lambda m: " ".join(m.args))
def test_mistake_is_two_lines_and_status_2(mistake, tmp_path):
    _check(mistakes.run_mistake(mistake, tmp_path), mistake)


@pytest.fixture(scope="module")
def minimum_typer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("typer-min")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder), *MINIMUM_TYPER],
        capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot install {' '.join(MINIMUM_TYPER)}: {done.stderr.strip()[-300:]}")
    return folder


# the usage errors typer and click produce themselves, for every command, plus the option checks of run
def _minimum_cases() -> list:
    chosen, commands = [], set()
    for mistake in mistakes.MISTAKES:
        command = mistake.args[:2] if mistake.args[:1] in {("matrix",), ("data",)} else mistake.args[:1]
        early_run = mistake.args[:2] == ("run", "ridge") and len(chosen) < 8
        if command not in commands or mistake.args == ("run",) or early_run:
            commands.add(command)
            chosen.append(mistake)
    return chosen


MINIMUM_CASES = _minimum_cases()


@pytest.mark.parametrize("mistake", MINIMUM_CASES, ids=lambda m: " ".join(m.args))
def test_mistake_at_the_minimum_typer(mistake, tmp_path, minimum_typer):
    probe = subprocess.run(
        [sys.executable, "-c", "import typer, click; print(typer.__version__, click.__version__)"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(minimum_typer)},
    )
    assert probe.stdout.split() == ["0.12.5", "8.1.7"], probe.stdout + probe.stderr
    _check(mistakes.run_mistake(mistake, tmp_path, str(minimum_typer)), mistake)


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [mistakes.console_script(), "run", "ridge", "--foo"], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "BRAINBENCH_DEBUG": "1", "BRAINBENCH_HOME": str(tmp_path)},
    )
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_matrix_run_help_keeps_bracketed_words(tmp_path):
    result = subprocess.run([mistakes.console_script(), "matrix", "run", "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
    assert result.returncode == 0
    assert "[defaults], [axes], [[overrides]]" in result.stdout, result.stdout


def test_ray_launcher_without_ray_is_one_line(tmp_path):
    blocker = tmp_path / "noray"
    blocker.mkdir()
    # ray is installed here: a meta-path finder makes it look missing
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'ray'\")\n"
        "sys.meta_path.insert(0, _NoRay())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(blocker), "BRAINBENCH_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [mistakes.console_script(), "run", "ridge", "mindeye", "--launcher", "ray", "--dry-run"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "--launcher ray needs the ray package" in result.stderr and "Traceback" not in result.stderr
