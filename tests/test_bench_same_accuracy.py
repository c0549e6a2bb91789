"""The same-accuracy check (issue 7) trains both Lite-Mind paths through the harness and reports a verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_same_accuracy.py"
VERDICTS = ("same accuracy", "different accuracy")


def run_script(*args: str, home: Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, "BRAINBENCH_HOME": str(home), "COLUMNS": "200"},
    )  # fmt: skip


def test_tiny_cpu_run_reports_both_paths_differences_and_verdict(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "same.json"
    completed = run_script(
        "--scale", "tiny", "--budget", "quick", "--epochs", "2", "--seeds", "0,1", "--device", "cpu",
        # tiny has 245 voxels: smaller patches and stages than the quick recipe's, to keep it to seconds
        "--opt", "patch_size=20", "--opt", "widths=32,16,8", "--json", str(out),
        home=home, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == report  # the last line is the same JSON
    assert "fast - faithful" in completed.stdout and "wall time" in completed.stdout
    assert (home / "synthetic").is_dir()  # the simulator wrote under the BRAINBENCH_HOME it was given

    settings = report["settings"]
    assert settings["scale"] == "tiny" and settings["seeds"] == [0, 1] and settings["device"] == "cpu"
    runs = report["runs"]
    assert {(r["path"], r["seed"]) for r in runs} == {(p, s) for p in ("faithful", "fast") for s in (0, 1)}
    for r in runs:
        assert r["encoder"] == "litemind" and r["epochs"] == 2 and r["budget"] == "quick"
        assert r["way"] == r["n_test"] == 30  # tiny has 30 test images: the task runs 30-way
        assert 0.0 <= r["fmri_to_image"] <= 1.0 and 0.0 <= r["image_to_fmri"] <= 1.0
        assert r["train_seconds"] > 0
    assert {r["options"]["impl"] for r in runs if r["path"] == "fast"} == {"fast"}
    assert {r["precision"] for r in runs if r["path"] == "faithful"} == {"fp32"}

    paths = {p["path"]: p for p in report["paths"]}
    assert set(paths) == {"faithful", "fast"}
    for p in paths.values():
        for direction in ("fmri_to_image", "image_to_fmri"):
            d = p[direction]
            assert len(d["per_seed"]) == 2 and all(0.0 <= v <= 1.0 for v in d["per_seed"])
            assert d["interval"][0] <= d["mean"] <= d["interval"][1]

    [comparison] = report["comparisons"]
    assert comparison["encoder"] == "litemind" and comparison["verdict"] in VERDICTS
    assert comparison["rule"].startswith("paired by seed")
    same = True
    for direction in ("fmri_to_image", "image_to_fmri"):
        c = comparison[direction]
        expected = [b - a for a, b in zip(paths["faithful"][direction]["per_seed"],
                                          paths["fast"][direction]["per_seed"], strict=True)]  # fmt: skip
        assert c["per_seed_difference"] == expected
        low, high = c["interval"]
        assert low - 1e-12 <= c["difference"] <= high + 1e-12
        assert c["same"] == (low <= 0.0 <= high)
        same = same and c["same"]
    assert comparison["verdict"] == VERDICTS[0 if same else 1]
    assert report["wall_seconds"] > 0


def test_bad_encoder_name_is_refused(tmp_path: Path) -> None:
    completed = run_script("--device", "cpu", "--encoders", "ridge", home=tmp_path, cwd=tmp_path, timeout=60)
    assert completed.returncode == 2
    assert "--encoders" in completed.stderr and "ridge" in completed.stderr and "litemind" in completed.stderr
    assert not (tmp_path / "synthetic").exists()  # refused before any data or training


def test_mindeye_fast_path_can_train_with_bf16_master_weights(tmp_path: Path) -> None:
    completed = run_script(
        "--encoders", "mindeye", "--fast-precision", "bf16-master", "--scale", "tiny", "--budget", "quick",
        "--epochs", "1", "--seeds", "0", "--device", "cpu", "--opt", "hidden=64",
        home=tmp_path / "home", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    settings = {p["path"]: p["settings"] for p in report["paths"]}
    assert settings == {"faithful": "precision fp32 (fp32)", "fast": "precision bf16-master (bf16 autocast)"}
    assert report["comparisons"][0]["verdict"] in VERDICTS


def test_mindeye_fast_path_can_train_with_a_low_precision_optimizer(tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    completed = run_script(
        "--encoders", "mindeye", "--fast-optimizer", "adamw8bit-bf16", "--scale", "tiny", "--budget", "quick",
        "--epochs", "1", "--seeds", "0", "--device", "cpu", "--opt", "hidden=64", "--json", str(tmp_path / "r.json"),
        home=tmp_path / "home", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())  # the final report replaces the per-run partial one
    assert "partial" not in report and report["settings"]["fast_optimizer"] == "adamw8bit-bf16"
    runs = {run["path"]: run for run in report["runs"]}
    assert runs["fast"]["optimizer"] == "adamw8bit-bf16" and runs["faithful"]["optimizer"] == "adamw"
    settings = {p["path"]: p["settings"] for p in report["paths"]}
    assert settings["fast"] == "precision auto (bf16 autocast, bf16 weights), optimizer adamw8bit-bf16"
