"""Hostile and broken third-party plugins, installed for real, against the console script in a subprocess.

A plugin may not replace a built-in command; one that hangs, exits, prints, raises or declares its hooks
wrongly at import (or in a hook) is warned about and skipped while every command keeps working, and
``BRAINBENCH_STRICT_PLUGINS=1`` makes each of these an error (exit 2, no traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, pip_install_target, write_dist

CONSOLE = Path(sys.executable).with_name("brainbench")  # the installed console script
TINY_RUN = ("run", "ridge", "--task", "retrieval", "--dataset-opt", "scale=tiny", "--device", "cpu")

HIJACKER = '''
import typer
from brainbench import hookimpl

@hookimpl
def register_commands(app):
    @app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def run(ctx: typer.Context):
        print("HIJACKED run", ctx.args)

    @app.command("hijacker-hello")
    def hello():
        print("hello from the hijacker's own command")
'''


def console(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The console script; a hang fails the test through ``timeout`` (the plugins below sleep an hour)."""
    full = {**os.environ, "COLUMNS": "250", "BRAINBENCH_PLUGIN_IMPORT_TIMEOUT": "2", **(env or {})}
    return subprocess.run([str(CONSOLE), *args], capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=timeout)


def pip_package(root: Path, dist: str, module: str, source: str, entry: str) -> Path:
    """A real distribution built and installed by pip into a folder; returns the folder (for PYTHONPATH)."""
    src = root / "src"
    src.mkdir(parents=True)
    (src / f"{module}.py").write_text(source)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "6.6.6"\n'
        f'[project.entry-points.brainbench]\n{entry} = "{module}"\n'
        f'[tool.setuptools]\npy-modules = ["{module}"]\n'
    )
    target = root / "target"
    pip_install_target(src, target)
    return target


@pytest.fixture(scope="module")
def hijacker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_package(tmp_path_factory.mktemp("hijacker"), "bb-hijacker", "bb_hijacker", HIJACKER, "hijacker")


# ------------------------------------------------------------------------- a plugin replacing `run`


def test_a_plugin_registering_run_does_not_replace_the_built_in(hijacker, tmp_path):
    env = {"PYTHONPATH": str(hijacker), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = console(*TINY_RUN, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HIJACKED" not in done.stdout and "fmri_to_image_top1_full" in done.stdout  # the real run ran
    warning = " ".join(done.stderr.split())
    for needle in ("command 'run' is registered twice", "bb-hijacker 6.6.6", str(hijacker / "bb_hijacker.py"),
                   "a built-in command's name is reserved", "pip uninstall bb-hijacker"):
        assert needle in warning, (needle, done.stderr)

    listed = console("plugins", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout) if r["distribution"] == "bb-hijacker"]
    assert row["refused_names"] == ["command 'run'"] and row["provides"] == {"command": ["hijacker-hello"]}
    assert row["path"] == str(hijacker / "bb_hijacker.py")
    table = console("plugins", env=env, cwd=tmp_path)
    assert "refused command 'run'" in " ".join(table.stdout.split())

    own = console("hijacker-hello", env=env, cwd=tmp_path)  # the rest of the plugin still works
    assert own.returncode == 0 and "hello from the hijacker's own command" in own.stdout


def test_a_plugin_registering_run_is_an_error_under_strict(hijacker, tmp_path):
    env = {"PYTHONPATH": str(hijacker), "BRAINBENCH_STRICT_PLUGINS": "1"}
    done = console(*TINY_RUN, env=env, cwd=tmp_path)
    assert done.returncode == 2 and "HIJACKED" not in done.stdout
    assert "command 'run' is registered twice" in done.stderr and "bb-hijacker 6.6.6" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "mlflow.db").exists()


SNEAKY = {
    # A group named like a built-in plugin's sub-app.
    "group named index": '''
import typer
from brainbench import hookimpl

@hookimpl
def register_commands(app):
    app.add_typer(typer.Typer(), name="index")
''',
    # A nameless sub-app merges its commands into the top level: its `compare` would win.
    "nameless group with compare": '''
import typer
from brainbench import hookimpl

@hookimpl
def register_commands(app):
    sub = typer.Typer()

    @sub.command("compare")
    def compare():
        print("HIJACKED compare")

    @sub.command("other")
    def other():
        print("x")

    app.add_typer(sub)
''',
    # Reaching into a built-in command group, or swapping a built-in command's callback in place.
    "adds to the index group": '''
from brainbench import hookimpl

@hookimpl
def register_commands(app):
    from brainbench_laion.commands import index_app

    @index_app.command("serve")
    def serve():
        print("HIJACKED serve")
''',
    "swaps a callback": '''
from brainbench import hookimpl

@hookimpl
def register_commands(app):
    for info in app.registered_commands:
        if info.name == "list":
            info.callback = lambda: print("HIJACKED list")
''',
}


@pytest.mark.parametrize("case", sorted(SNEAKY))
def test_sneakier_command_replacements_are_refused(case, tmp_path):
    site = tmp_path / "site"
    write_dist(site, "bb-sneaky", "bb_sneaky", SNEAKY[case])
    env = {"PYTHONPATH": str(site)}
    listing = console("list", "encoders", env=env, cwd=tmp_path)
    assert listing.returncode == 0 and "ridge" in listing.stdout and "HIJACKED" not in listing.stdout
    assert "bb-sneaky 0.1" in listing.stderr and str(site / "bb_sneaky.py") in " ".join(listing.stderr.split())
    help_text = console("index", "serve", "--help", env=env, cwd=tmp_path)
    assert help_text.returncode == 0 and "--indice-name" in help_text.stdout
    compare = console("compare", "--help", env=env, cwd=tmp_path)
    assert compare.returncode == 0 and "--baseline" in compare.stdout
    strict = console("list", "encoders", env={**env, "BRAINBENCH_STRICT_PLUGINS": "1"}, cwd=tmp_path)
    assert strict.returncode == 2 and "bb-sneaky 0.1" in strict.stderr and "Traceback" not in strict.stderr


# -------------------------------------------------------------------------------- broken plugins

HOOK = "from brainbench import hookimpl\n"
BROKEN = {
    # case: (module source, what the warning says)
    "sleeps at import": ("import time\ntime.sleep(3600)\n", "did not finish importing within 2 s"),
    "sys.exit(0) at import": ("import sys\nsys.exit(0)\n", "called sys.exit(0) while importing"),
    "BaseException at import": ("raise BaseException('gave up')\n", "BaseException: gave up"),
    "KeyboardInterrupt raised at import": ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    "wrong hook argument name": (HOOK + "@hookimpl\ndef register_encoders(registr):\n    pass\n",
                                 "implements register_encoders(registr), but the hook passes only register"),
    "misspelled hook": (HOOK + "@hookimpl\ndef register_encoder(register):\n    pass\n",
                        "unknown hook 'register_encoder'; did you mean 'register_encoders'?"),
    "sleeps in a hook": (HOOK + "import time\n@hookimpl\ndef register_tasks(register):\n    time.sleep(3600)\n",
                         "did not finish running its register_tasks hook within 2 s"),
    "sys.exit in register_commands": (HOOK + "import sys\n@hookimpl\ndef register_commands(app):\n"
                                             "    sys.exit(3)\n", "called sys.exit(3) while adding its commands"),
    "sleeps in register_commands": (HOOK + "import time\n@hookimpl\ndef register_commands(app):\n"
                                           "    time.sleep(3600)\n", "did not finish adding its commands"),
    "command that cannot be built": (HOOK + "from typer.models import CommandInfo\n@hookimpl\n"
                                            "def register_commands(app):\n"
                                            "    app.registered_commands.append(CommandInfo(name='odd'))\n",
                                     "adds a command that cannot be built"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_warned_about_and_skipped(case, tmp_path):
    source, says = BROKEN[case]
    site = tmp_path / "site"
    write_dist(site, "bb-broken", "bb_broken", source)
    env = {"PYTHONPATH": str(site)}
    done = console("list", "encoders", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ridge" in done.stdout and "litemind" in done.stdout  # the command did its job
    warning = " ".join(done.stderr.split())
    assert says in warning and "bb-broken 0.1" in warning and str(site / "bb_broken.py") in warning, warning
    assert "Traceback" not in done.stderr and "Internal error" not in done.stderr

    strict = console("list", "encoders", env={**env, "BRAINBENCH_STRICT_PLUGINS": "1"}, cwd=tmp_path)
    assert strict.returncode == 2 and says in " ".join(strict.stderr.split()), strict.stderr
    assert "Traceback" not in strict.stderr and "ridge" not in strict.stdout


def test_broken_plugins_are_listed_as_skipped(tmp_path):
    site = tmp_path / "site"
    write_dist(site, "bb-exits", "bb_exits", BROKEN["sys.exit(0) at import"][0])
    write_dist(site, "bb-typo", "bb_typo", BROKEN["misspelled hook"][0])
    done = console("plugins", "--json", env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["bb_exits"]["status"] == "skipped" and "sys.exit(0)" in rows["bb_exits"]["error"]
    assert rows["bb_typo"]["status"] == "skipped" and "register_encoder" in rows["bb_typo"]["error"]
    assert rows["ridge"]["status"] == "loaded" and rows["ridge"]["error"] is None


@pytest.mark.parametrize("target", ["brainbench_ridge", "brainbench.cli.app"])
def test_an_entry_point_at_brainbench_code_is_skipped(target, tmp_path):
    site = tmp_path / "site"
    info = site / "bb_evil-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bb-evil\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[brainbench]\nevil = {target}\n")
    env = {"PYTHONPATH": str(site)}
    done = console("list", "encoders", env=env, cwd=tmp_path)
    assert done.returncode == 0 and "ridge" in done.stdout, done.stderr
    warning = " ".join(done.stderr.split())
    assert f"(evil = {target}) that names brainbench's own code" in warning and str(info) in warning
    listed = console("plugins", "--json", env=env, cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert [r["status"] for r in rows if r["name"] == "evil"] == ["skipped"]
    [ridge] = [r for r in rows if r["name"] == "ridge"]
    assert ridge["builtin"] and ridge["path"] == str(REPO / "plugins" / "brainbench_ridge")
    strict = console("list", "encoders", env={**env, "BRAINBENCH_STRICT_PLUGINS": "1"}, cwd=tmp_path)
    assert strict.returncode == 2 and "bb-evil 0.1" in strict.stderr and "Traceback" not in strict.stderr


# ------------------------------------------------------------------------------ output and help


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose mlflow.db holds one finished run, for ``compare -f json``."""
    folder = tmp_path_factory.mktemp("store")
    done = console(*TINY_RUN, env={"BRAINBENCH_PLUGINS": ""}, cwd=folder, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.mark.parametrize("where", ["import", "hook"])
def test_a_printing_plugin_does_not_corrupt_json_output(where, store, tmp_path):
    noisy = ("print('hello from a plugin')\nimport sys\nprint('and on stderr', file=sys.stderr)\n" if where ==
             "import" else HOOK + "@hookimpl\ndef register_tasks(register):\n    print('hello from a plugin')\n")
    site = tmp_path / "site"
    write_dist(site, "bb-noisy", "bb_noisy", noisy)
    done = console("compare", "-f", "json", env={"PYTHONPATH": str(site)}, cwd=store)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]  # valid JSON: the plugin's text is not on stdout
    assert [r["encoder"] for r in rows] == ["ridge"]
    assert "hello from a plugin" not in done.stdout and "bb-noisy 0.1" in done.stderr
    assert "'hello from a plugin" in done.stderr  # shown in the warning instead


def test_version_and_builtin_help_never_import_third_party_plugins(tmp_path):
    marker = tmp_path / "imported"
    site = tmp_path / "site"
    write_dist(site, "bb-slow", "bb_slow", f"open({str(marker)!r}, 'a').write('x')\nimport time\n"
                                            "time.sleep(3600)\n")
    env = {"PYTHONPATH": str(site), "BRAINBENCH_PLUGIN_IMPORT_TIMEOUT": "600"}
    version = console("--version", env=env, cwd=tmp_path, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("brainbench ")
    run_help = console("run", "--help", env=env, cwd=tmp_path, timeout=60)
    assert run_help.returncode == 0 and "--task" in run_help.stdout
    assert not marker.exists()  # neither imported the plugin, so neither waited on it
    listing = console("list", "encoders", env={**env, "BRAINBENCH_PLUGIN_IMPORT_TIMEOUT": "1"}, cwd=tmp_path)
    assert listing.returncode == 0 and marker.exists()  # any other command loads it (and gives up after 1 s)


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_time_limit_warns_and_the_default_applies(value, tmp_path, monkeypatch, capsys):
    from brainbench.guarded import DEFAULT_TIMEOUT, _parse_timeout, timeout_seconds
    from brainbench.plugins import load_plugins

    _parse_timeout.cache_clear()  # it warns once per value and process
    monkeypatch.setenv("BRAINBENCH_PLUGIN_IMPORT_TIMEOUT", value)
    assert timeout_seconds() == DEFAULT_TIMEOUT
    assert f"BRAINBENCH_PLUGIN_IMPORT_TIMEOUT={value!r} is not a number of seconds" in capsys.readouterr().err
    assert timeout_seconds() == DEFAULT_TIMEOUT and capsys.readouterr().err == ""  # once, not per plugin call
    site = tmp_path / "site"
    write_dist(site, "bb-fine", "bb_fine", HOOK + "@hookimpl\ndef register_tasks(register):\n"
                                                  "    register('fine-task', lambda **o: o)\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        assert "fine-task" in load_plugins().tasks
    finally:
        sys.modules.pop("bb_fine", None)
    monkeypatch.setenv("BRAINBENCH_PLUGIN_IMPORT_TIMEOUT", "0")
    assert timeout_seconds() is None  # 0: no limit
