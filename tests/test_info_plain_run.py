"""`brainbench info ENCODER` says what a plain `brainbench run ENCODER` would use: dataset, target and its shape,
quick or reference recipe and why, resolved the way the run resolves them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def plain_run(*args: str, cwd: Path) -> dict:
    done = run_cli("info", *args, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["plain_run"]


def test_litemind_on_the_demo_simulator_uses_its_quick_recipe_and_says_why(tmp_path: Path) -> None:
    plain = plain_run("litemind", cwd=tmp_path)
    assert plain["command"] == "brainbench run litemind --task retrieval"
    assert (plain["dataset"], plain["synthetic"], plain["demo_scale"]) == ("synthetic-nsd", True, True)
    assert plain["target"] == "synthetic-clip" and plain["target_shape"] == [768]
    assert plain["budget"] == "quick" and "demo scale" in plain["why"] and "--budget reference" in plain["why"]
    assert plain["quick_recipe"]["epochs"] == 30 and plain["quick_recipe"]["options"]["widths"] == "128,64,32"
    assert plain["reference_recipe"]["epochs"] == 1500
    assert plain["quick_parameters"] > 0


def test_ridge_has_no_recipe_to_choose(tmp_path: Path) -> None:
    plain = plain_run("ridge", "--task", "god-zeroshot", cwd=tmp_path)
    assert plain["dataset"] == "synthetic-god" and plain["budget"] == "reference"
    assert "no training recipe" in plain["why"] and plain["reference_recipe"] is None


def test_the_table_view_names_the_plain_run(tmp_path: Path) -> None:
    done = run_cli("info", "mindeye", "--target-shape", "768", cwd=tmp_path, env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "brainbench run mindeye --task retrieval would use: dataset synthetic-nsd" in done.stdout
    assert "budget quick" in done.stdout and "reference recipe: 240 epochs" in done.stdout
