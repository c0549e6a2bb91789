"""The GPU check's parts run on the CPU: the profile script, the summary of a run's folder, the script's
argument check. (``benchmarks/gpu_check.sh OUT --cpu-smoke`` runs the whole thing; minutes, so not here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"}


def _run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV)


def test_profile_counts_ops_bytes_and_launches_for_faithful_and_fast(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    script = str(REPO / "benchmarks" / "profile_train_step.py")
    done = _run(sys.executable, script, "--tiny", "--device", "cpu", "--encoders", "litemind", "--steps", "1",
                "--warmup", "1", "--json", str(out), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == report
    cases = {case["label"]: case for case in report["cases"]}
    assert set(cases) == {"litemind faithful b16", "litemind fast b16"}
    for case in cases.values():
        assert "error" not in case, case
        assert case["launches_per_step"] > 0 and case["launch_kind"] == "aten ops (CPU)"
        assert case["top"] and all(0 <= row["share"] <= 1 for row in case["top"])
        assert case["eager_ops_per_step"] > 100 and case["eager_bytes_per_step"] > 0 and case["flops_per_step"] > 0
        assert case["roofline_floor_ms"] > 0
    # the fast path computes the same function with real DFT matmuls: more FLOPs, fewer complex copies
    assert cases["litemind fast b16"]["flops_per_step"] > cases["litemind faithful b16"]["flops_per_step"]


def test_summary_reports_what_a_run_left_and_says_what_is_missing(tmp_path: Path) -> None:
    speed = _run(sys.executable, str(REPO / "benchmarks" / "bench_train_speed.py"), "--tiny", "--device", "cpu",
                 "--encoders", "mindeye", "--steps", "1", "--warmup", "0", "--mindeye-optimizers", "adamw8bit",
                 "--json", str(tmp_path / "speed.json"), cwd=tmp_path)  # fmt: skip
    assert speed.returncode == 0, speed.stderr[-3000:]
    (tmp_path / "steps.jsonl").write_text(json.dumps({"step": "speed", "rc": 0, "seconds": 9, "limit": 210}) + "\n")
    done = _run(sys.executable, str(REPO / "benchmarks" / "gpu_check_summary.py"), str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "summary.md").read_text()
    assert "| mindeye fast b8 adamw8bit | fp32, AdamW, 8-bit moments (torchao) |" in text
    assert "| speed | 0 | 9 | 210 |" in text
    assert "profile.json missing" in text and "same_litemind.json missing" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["profile"] is None and len(summary["speed"]["results"]) == 4


def test_gpu_check_refuses_an_unknown_mode(tmp_path: Path) -> None:
    done = _run("bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out"), "--fast", cwd=tmp_path)
    assert done.returncode == 2 and "unknown mode" in done.stderr
