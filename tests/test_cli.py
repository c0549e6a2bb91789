"""The CLI as a user runs it: a subprocess, real plugins, real output."""

import json
import subprocess
import sys

from tests.conftest import REPO, pip_install_target, run_cli

HEAVY = ("torch", "mlflow", "open_clip", "faiss", "ray", "h5py")


def test_help_lists_commands_and_imports_nothing_heavy():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "plugins", "list", "info"):
        assert command in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from brainbench.cli.app import build_app; build_app(); "
         f"print([m for m in {HEAVY!r} if m in sys.modules])"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]", probe.stdout


def test_plugins_json_lists_builtins():
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["ridge"]["builtin"] and rows["ridge"]["provides"] == {"encoder": ["ridge"]}
    assert "retrieval" in rows["nsd"]["provides"]["task"]


def test_unknown_encoder_is_one_clear_line():
    result = run_cli("info", "litemnd")
    assert result.returncode == 2
    assert "unknown encoder 'litemnd'; did you mean 'litemind'" in result.stderr
    assert "Traceback" not in result.stderr


BROKEN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"
[project]
name = "brainbench-broken"
version = "0.0.1"
[project.entry-points.brainbench]
broken = "brainbench_broken"
[tool.setuptools]
py-modules = ["brainbench_broken"]
"""


def test_broken_installed_plugin_leaves_cli_working(tmp_path):
    source = tmp_path / "broken"
    source.mkdir()
    (source / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (source / "brainbench_broken.py").write_text("import a_module_that_does_not_exist\n")
    site = tmp_path / "site"
    pip_install_target(source, site)
    env = {"PYTHONPATH": str(site)}
    result = run_cli("list", "encoders", env=env)
    assert result.returncode == 0, result.stderr
    assert "ridge" in result.stdout
    assert "plugin 'broken'" in result.stderr and "a_module_that_does_not_exist" in result.stderr
    strict = run_cli("list", "encoders", env={**env, "BRAINBENCH_STRICT_PLUGINS": "1"})
    assert strict.returncode != 0 and "broken" in strict.stderr


def test_example_plugin_package_installs_and_is_found(tmp_path):
    site = tmp_path / "site"
    pip_install_target(REPO / "plugins" / "examples" / "brainbench-knn", site)
    result = run_cli("plugins", "--json", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["knn"]["builtin"] is False
    assert rows["knn"]["distribution"] == "brainbench-knn"
    assert rows["knn"]["provides"] == {"encoder": ["knn"], "task": ["mean-cosine"]}
    hidden = run_cli("plugins", "--json", env={"PYTHONPATH": str(site), "BRAINBENCH_PLUGINS": ""})
    assert "knn" not in {row["name"] for row in json.loads(hidden.stdout)}
