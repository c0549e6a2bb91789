"""Hostile and broken third-party plugins against an installed ``brainbench``: does each command still work?

    python benchmarks/hostile_plugins.py [--brainbench PATH] [--limit 60] [--cases a,b]

Each case installs one plugin (a dist-info folder with an entry point in group ``brainbench``, put on
PYTHONPATH), runs the console script in a subprocess from a scratch folder and classifies what the user gets:

- ``clean``: the built-in command did its job (exit 0, its real output), the plugin was warned about on stderr;
- ``hang``: no answer within ``--limit`` seconds;
- ``silent exit``: exit 0 without the command's output (the plugin ended the process);
- ``hijacked``: the plugin's code ran in place of the built-in command;
- ``corrupt output``: stdout that should be JSON is not;
- ``internal error`` / ``exit N``: the command failed because of the plugin.

Run it with /work/main/.venv/bin/brainbench (before) and the fixed checkout's (after); it prints one line per
case and the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HIJACK = '''
from brainbench import hookimpl

@hookimpl
def register_commands(app):
    import typer

    @app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def run(ctx: typer.Context):
        print("HIJACKED run", ctx.args)
'''
HEADER = "from brainbench import hookimpl\n"
CASES_SOURCE = {
    "hijack run command": HIJACK,
    "sleep(3600) at import, --version": "import time\ntime.sleep(3600)\n",
    "sleep(3600) at import, list": "import time\ntime.sleep(3600)\n",
    "sys.exit(0) at import": "import sys\nsys.exit(0)\n",
    "BaseException at import": "raise BaseException('plugin gave up')\n",
    "print() at import, compare -f json": "print('hello from a plugin')\n",
    "hookimpl with a wrong argument name": HEADER + "@hookimpl\ndef register_encoders(registr):\n    pass\n",
    "entry point at brainbench_ridge": None,
    "entry point at brainbench.cli.app": None,
    "misspelled hook": HEADER + "@hookimpl\ndef register_encoder(register):\n    pass\n",
    "sleep(3600) in a hook": HEADER + "import time\n@hookimpl\ndef register_tasks(register):\n    time.sleep(3600)\n",
    "print() in a hook, compare -f json": HEADER + "@hookimpl\ndef register_tasks(register):\n    print('hi')\n",
    "sys.exit(0) in register_commands": HEADER + "import sys\n@hookimpl\ndef register_commands(app):\n"
                                               "    sys.exit(0)\n",
}
ENTRY_TARGETS = {"entry point at brainbench_ridge": "brainbench_ridge",
                 "entry point at brainbench.cli.app": "brainbench.cli.app"}
RUN = ["run", "ridge", "--task", "retrieval", "--dataset-opt", "scale=tiny", "--device", "cpu"]


@dataclass
class Case:
    name: str
    args: list[str]
    wants: str  # what the real command prints: a word on stdout, or "json"


COMMANDS = {
    "hijack run command": Case("", RUN, "fmri_to_image_top1_full"),
    "sleep(3600) at import, --version": Case("", ["--version"], "brainbench"),
    "print() at import, compare -f json": Case("", ["compare", "-f", "json"], "json"),
    "print() in a hook, compare -f json": Case("", ["compare", "-f", "json"], "json"),
}
DEFAULT = Case("", ["list", "encoders"], "ridge")


def write_plugin(site: Path, case: str, index: int) -> None:
    module = f"bb_hostile_{index}"
    target = ENTRY_TARGETS.get(case, module)
    info = site / f"bb_hostile_{index}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bb-hostile-{index}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[brainbench]\nhostile{index} = {target}\n")
    source = CASES_SOURCE[case]
    if source is not None:
        (site / f"{module}.py").write_text(source)


def classify(case: Case, done: subprocess.CompletedProcess[str] | None) -> str:
    if done is None:
        return "hang"
    if "HIJACKED" in done.stdout:
        return "hijacked"
    if "Internal error" in done.stderr:
        return "internal error"
    if done.returncode != 0:
        return f"exit {done.returncode}"
    if case.wants == "json":
        try:
            json.loads(done.stdout)
        except ValueError:
            return "corrupt output" if done.stdout.strip() else "silent exit"
        return "clean" if "Warning" in done.stderr else "unwarned"
    if case.wants not in done.stdout:
        return "silent exit"
    return "clean" if "Warning" in done.stderr or case.args == ["--version"] else "unwarned"


def run(cli: str, args: list[str], env: dict[str, str], cwd: Path, limit: float):
    started = time.perf_counter()
    process = subprocess.Popen([cli, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=cwd, start_new_session=True)
    try:
        out, err = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the process group we started, nothing else
        process.communicate()
        return None, time.perf_counter() - started
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brainbench", default=shutil.which("brainbench") or "brainbench")
    parser.add_argument("--limit", type=float, default=60.0, help="Seconds before a command counts as hung.")
    parser.add_argument("--cases", default="", help="Comma-separated case names (default: all).")
    parser.add_argument("--verbose", action="store_true", help="Print each command's stderr tail.")
    args = parser.parse_args()
    chosen = [c for c in CASES_SOURCE if not args.cases or c in args.cases.split(",")]
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="bb-hostile-") as scratch:
        root = Path(scratch)
        env = {**os.environ, "BRAINBENCH_HOME": str(root / "home"), "COLUMNS": "200"}
        env.pop("BRAINBENCH_PLUGINS", None)
        env.pop("BRAINBENCH_STRICT_PLUGINS", None)
        store = root / "work"
        store.mkdir()
        # One real run without plugins, so `compare -f json` has something to print.
        seeded, _ = run(args.brainbench, RUN, {**env, "BRAINBENCH_PLUGINS": ""}, store, 600)
        if seeded is None or seeded.returncode != 0:
            sys.exit(f"could not make the store compare reads: {seeded and seeded.stderr[-2000:]}")
        print(f"brainbench: {args.brainbench}")
        for index, name in enumerate(chosen):
            site = root / f"site{index}"
            write_plugin(site, name, index)
            case = COMMANDS.get(name, DEFAULT)
            done, seconds = run(args.brainbench, case.args, {**env, "PYTHONPATH": str(site)}, store, args.limit)
            outcome = classify(case, done)
            counts[outcome] += 1
            print(f"{name:40s} {' '.join(case.args[:3]):28s} {outcome:15s} {seconds:6.1f} s")
            if args.verbose and done is not None:
                print("    stderr: " + done.stderr.strip()[-600:].replace("\n", "\n            "))
    print("counts: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()) + f" (of {len(chosen)} cases)")


if __name__ == "__main__":
    main()
