"""Summarise a ``benchmarks/gpu_check.sh`` folder: OUTDIR/summary.md (short markdown) and summary.json.

    python benchmarks/gpu_check_summary.py OUTDIR

Reads whatever the steps left (speed.json, profile.json, same_litemind.json, same_mindeye.json,
steps.jsonl); a missing or partial file is said so, never guessed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def speed_section(report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return ["## Speed", "", "speed.json missing: the speed step did not finish a case."]
    lines = ["## Speed (bench_train_speed.py)", ""]
    if report.get("partial"):
        lines += ["**partial**: the step was cut short; the cases it finished:", ""]
    env = report.get("environment", {})
    if env:
        lines += [f"{env.get('device_name')} | torch {env.get('torch')} (CUDA {env.get('cuda')}) | "
                  f"{env.get('n_voxels')} voxels -> {env.get('target_shape')} | median of {env.get('steps')} steps "
                  f"after {env.get('warmup')}", ""]  # fmt: skip
    faithful = {r["encoder"]: r for r in report.get("results", []) if r["path"] == "faithful"}
    lines += ["| case | settings | ms/step | samples/s | vs faithful | peak GB | first step s |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report.get("results", []):
        base = faithful.get(r["encoder"])
        ratio = f"{r['samples_per_s'] / base['samples_per_s']:.2f}x" if base and r["batch"] == base["batch"] else "-"
        lines.append(f"| {r['label']} | {r['settings']} | {r['ms_per_step']:.2f} | {r['samples_per_s']:,.0f} | "
                     f"{ratio} | {r['peak_memory_gb']:.2f} | {r['first_step_s']:.1f} |")  # fmt: skip
    for row in report.get("ratios", []):
        if row.get("target_met") is not None:
            lines.append(f"- target {row['label']}: >= {row['target_samples_per_s']:,} samples/s, <= "
                         f"{row['reference_peak_gb']} GB: **{'PASS' if row['target_met'] else 'FAIL'}** "
                         f"({row['speedup']:.2f}x faithful)")  # fmt: skip
    for item in report.get("failed", []):
        lines.append(f"- FAILED {item['label']}: {item['error'][:300]}")
    if report.get("skipped"):
        lines.append(f"- skipped (time budget): {', '.join(report['skipped'])}")
    same = report.get("same_function")
    if same:
        bf16 = [same.get(f"max_relative_error_{key}_vs_faithful_fp32")
                for key in ("fast_bf16", "fast_bf16_spectral_bf16", "faithful_bf16")]  # fmt: skip
        lines.append(f"- same function (fp64): {same['max_relative_error_fp64']:.1e} "
                     f"({'PASS' if same['passed'] else 'FAIL'}); bf16 autocast vs faithful fp32 (max relative): fast "
                     f"{_e(bf16[0])} (spectral ops fp32), fast with spectral ops in bf16 {_e(bf16[1])}, faithful "
                     f"{_e(bf16[2])}")  # fmt: skip
    return lines


def profile_section(report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return ["## Profile", "", "profile.json missing."]
    lines = ["## Profile (profile_train_step.py)", ""]
    for case in report.get("cases", []):
        if "error" in case:
            lines.append(f"- {case['label']}: FAILED {case['error'][:300]}")
            continue
        text = (f"- **{case['label']}**: {case['profiled_ms_per_step']:.2f} ms/step profiled, "
                f"{case['launches_per_step']:.0f} {case['launch_kind']} per step, first step "
                f"{case.get('first_step_s', 0):.1f} s")  # fmt: skip
        if "eager_ops_per_step" in case:
            text += (f"; eager: {case['eager_ops_per_step']} ops, {case['eager_bytes_per_step'] / 1e9:.1f} GB "
                     f"moved (upper bound), {case['flops_per_step'] / 1e12:.2f} TFLOP, roofline floor "
                     f"{case['roofline_floor_ms']:.2f} ms")  # fmt: skip
        lines.append(text)
        for row in case.get("top", [])[:6]:
            lines.append(f"    - {row['share']:.1%} {row['ms_per_step']:.3f} ms x{row['calls_per_step']:.0f} "
                         f"`{row['name'][:90]}`")  # fmt: skip
    return lines


def same_section(name: str, report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return [f"## Same accuracy: {name}", "", f"same_{name}.json missing."]
    lines = [f"## Same accuracy: {name} (bench_same_accuracy.py)", ""]
    if report.get("partial"):
        runs = report.get("runs", [])
        lines.append(f"**partial**: {len(runs)} run(s) finished before the time limit:")
        for run in runs:
            lines.append(f"- {run['encoder']} {run['path']} seed {run['seed']}: fMRI->image "
                         f"{run['fmri_to_image']:.3f}, image->fMRI {run['image_to_fmri']:.3f}, trained "
                         f"{run['train_seconds']:.1f} s")  # fmt: skip
        return lines
    settings = report.get("settings", {})
    lines.append(f"scale {settings.get('scale')}, seeds {settings.get('seeds')}, epochs {settings.get('epochs')}, "
                 f"{settings.get('device')}")  # fmt: skip
    for path in report.get("paths", []):
        cells = "; ".join(
            f"{d}: {path[d]['mean']:.3f} [{path[d]['interval'][0]:.3f}, {path[d]['interval'][1]:.3f}]"
            for d in ("fmri_to_image", "image_to_fmri")
        )
        lines.append(f"- {path['path']} ({path['settings']}): {cells}; train {path['train_seconds_mean']:.1f} s/run")
    for comparison in report.get("comparisons", []):
        lines.append(f"- **{comparison['verdict']}** ({comparison['rule']})")
    return lines


def main(argv: list[str]) -> dict[str, Any]:
    if len(argv) != 1:
        raise SystemExit("usage: gpu_check_summary.py OUTDIR")
    out = Path(argv[0])
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()] \
        if (out / "steps.jsonl").exists() else []  # fmt: skip
    speed, profile = load(out / "speed.json"), load(out / "profile.json")
    same = {name: load(out / f"same_{name}.json") for name in ("litemind", "mindeye")}
    lines = ["# gpu_check summary", ""]
    env = (out / "env.txt").read_text().strip() if (out / "env.txt").exists() else "env.txt missing"
    lines += ["```", env, "```", ""]
    lines += ["| step | rc | seconds | limit |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['rc']} | {s['seconds']} | {s['limit']} |" for s in steps]
    lines += [""] + speed_section(speed) + [""] + profile_section(profile)
    for name, report in same.items():
        lines += [""] + same_section(name, report)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    summary = {"steps": steps, "speed": speed, "profile": profile, "same_accuracy": same}
    (out / "summary.json").write_text(json.dumps(summary) + "\n")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
