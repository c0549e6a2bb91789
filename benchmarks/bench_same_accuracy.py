"""Same accuracy: the fast and the faithful training paths reach the same 300-way retrieval accuracy (issue 7).

    python benchmarks/bench_same_accuracy.py --budget quick --epochs 30               # one GPU, nsd scale
    python benchmarks/bench_same_accuracy.py --scale small --budget quick --device cpu  # CPU, ~1 min a run
    python benchmarks/bench_same_accuracy.py --encoders litemind,mindeye --seeds 0,1,2,3,4

In one process it trains every (encoder, path, seed) on the built-in NSD simulator through the harness's own
cell (``brainbench.runner.run_cell``: the runner's validation split, quick recipe, trainer and the
``retrieval`` task), without MLflow, and compares the paths' 300-way top-1 accuracy in both directions:

- litemind faithful: ``impl=faithful`` (complex torch.fft, as the reference), precision fp32;
- litemind fast: ``impl=fast`` (real DFT matmuls, the head folded into the loss: same function), precision
  auto (bf16 autocast on capable GPUs, fp32 on the CPU), compiled block by block on CUDA (``--compile auto``);
- mindeye faithful: precision fp32; mindeye fast: precision auto (bf16 + fused AdamW on CUDA).

Per path: the accuracy per seed, the mean over seeds with its 95% Student-t interval (``stats.t_interval``) and
the training time. Per encoder and direction: fast minus faithful, paired by seed, with the 95% t-interval of
the per-seed differences; the verdict is "same accuracy" when 0 lies in that interval in both directions.
With a single seed there are no differences to spread, so the rule becomes "the two paths' 95% Wilson
intervals (over the test queries) overlap"; the report names the rule it used.

Why the seed-to-seed interval and not the task's own: the task's interval spreads its 30 random 300-way draws.
At ``small`` scale the simulator has exactly 300 test images, so every draw is the whole test set, all 30
draws are the same draw and that interval has zero width (at ``tiny`` scale, 30 test images, the task runs
30-way). Even at ``nsd`` scale (982 test images) it measures only which distractors were drawn, not how much
training from another seed moves the accuracy, which is what "the same accuracy" has to be judged against.

The simulator's data are generated under ``BRAINBENCH_HOME``; when it is not set, a temporary folder is used
and removed at the end (set it to keep the ~2 GB nsd-scale data between runs). Checkpoints go to a temporary
folder always, so no run resumes another. ``--json PATH`` writes the report; the last printed line is that
JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from brainbench.config import BUDGETS, RunConfig
from brainbench.devices import resolve_device, resolve_precision
from brainbench.errors import BrainbenchError
from brainbench.plugins import get_plugins
from brainbench.reporting import QuietReporter
from brainbench.runner import CellResult, run_cell
from brainbench.stats import t_interval, wilson_interval

DIRECTIONS = ("fmri_to_image", "image_to_fmri")
ARROWS = {"fmri_to_image": "fMRI->image", "image_to_fmri": "image->fMRI"}
WAY = 300
#: encoder -> path -> (encoder options, precision). The path's settings win over --opt.
PATHS: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
    "litemind": {"faithful": ({"impl": "faithful"}, "fp32"), "fast": ({"impl": "fast"}, "auto")},
    "mindeye": {"faithful": ({}, "fp32"), "fast": ({}, "auto")},
}
SAME, DIFFERENT = "same accuracy", "different accuracy"
RULE_PAIRED = "paired by seed: 95% t-interval of the per-seed differences contains 0 (both directions)"
RULE_OVERLAP = "one seed: the paths' 95% Wilson intervals over the test queries overlap (both directions)"
SCALES = ("tiny", "small", "nsd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale",
        choices=SCALES,
        help="simulator scale (default: nsd on CUDA, small on the CPU; tiny needs e.g. --opt patch_size=20)",
    )
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's)")
    parser.add_argument(
        "--budget",
        choices=BUDGETS,
        default="auto",
        help="the runner's budget: quick recipe, reference recipe, or auto (quick on demo scales)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--encoders", default="litemind", help="comma-separated: litemind, mindeye")
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--target", help="target name (default: the task's, synthetic-clip 768-d)")
    parser.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="[ENCODER.]KEY=VALUE",
        help="encoder option for every encoder, or for one with an ENCODER. prefix (repeatable)",
    )
    parser.add_argument(
        "--fast-precision",
        choices=("auto", "bf16", "bf16-master"),
        default="auto",
        help="the fast paths' precision (default auto: bf16 autocast on capable GPUs); bf16-master: bf16 weights "
        "with fp32 master weights, MindEye's fast optimizer",
    )
    parser.add_argument(
        "--fast-optimizer",
        choices=("adamw", "adamw8bit", "adamw8bit-bf16", "adamw-bf16-states"),
        default="adamw",
        help="the fast paths' optimizer (the trainer's --optimizer; the low-precision ones need torchao)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON report here (after every run, too)")
    args = parser.parse_args(argv)

    args.encoders = [name.strip() for name in args.encoders.split(",") if name.strip()]
    unknown = [name for name in args.encoders if name not in PATHS]
    if unknown or not args.encoders:
        parser.error(
            f"--encoders: unknown encoder(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(PATHS)}"
        )
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: expected integers like 0,1,2, got {args.seeds!r}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: expected distinct integers like 0,1,2, got {args.seeds!r}")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    args.options = {name: {} for name in args.encoders}
    for item in args.opt:
        key, sep, raw = item.partition("=")
        encoder, dot, key = key.strip().rpartition(".") if "." in key else ("", "", key.strip())
        if not sep or not key or (dot and encoder not in PATHS):
            parser.error(
                f"--opt: expected KEY=VALUE or ENCODER.KEY=VALUE (encoder one of {', '.join(PATHS)}), got {item!r}"
            )
        if key == "impl":
            parser.error("--opt impl=...: the path sets impl (faithful vs fast); leave it out")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        for name in [encoder] if dot else args.encoders:
            if name in args.options:
                args.options[name][key] = value
    try:
        args.device = str(resolve_device(args.device))
    except (BrainbenchError, RuntimeError) as error:  # CUDA asked for but absent, or not a device name
        parser.error(f"--device: {error}")
    if args.scale is None:
        args.scale = "nsd" if args.device.startswith("cuda") else "small"
    plugins = get_plugins()
    for name in args.encoders:  # refuse bad options now, not after the first training run
        for path_options, _ in PATHS[name].values():
            try:
                plugins.encoders.create(name, **{**args.options[name], **path_options})
            except (TypeError, ValueError) as error:
                parser.error(f"--opt: {error}")
    return args


def path_precision(args: argparse.Namespace, encoder: str, path: str) -> str:
    return args.fast_precision if path == "fast" else PATHS[encoder][path][1]


def train_one(args: argparse.Namespace, encoder: str, path: str, seed: int, work: Path) -> dict[str, Any]:
    path_options, precision = PATHS[encoder][path][0], path_precision(args, encoder, path)
    config = RunConfig(
        encoder=encoder, task="retrieval", target=args.target, subject=args.subject, seed=seed,
        epochs=args.epochs, device=args.device, precision=precision, budget=args.budget,
        optimizer=args.fast_optimizer if path == "fast" else "adamw",
        encoder_options={**args.options[encoder], **path_options}, dataset_options={"scale": args.scale},
    )  # fmt: skip
    result: CellResult = run_cell(config, QuietReporter(), work / f"{encoder}-{path}-seed{seed}")
    metrics = {m.name: m for m in result.metrics}
    draws = json.loads(next(p for p in result.artifacts if p.name == "retrieval_draws.json").read_text())
    run: dict[str, Any] = {
        "encoder": encoder, "path": path, "seed": seed, "options": path_options, "precision": precision,
        "optimizer": config.optimizer,
        "epochs": result.params.get("epochs"), "batch_size": result.params.get("batch_size"),
        "budget": result.params["budget"], "way": draws["way"], "n_test": draws["n_items"],
        "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
    }  # fmt: skip
    for direction in DIRECTIONS:
        metric = metrics[f"{direction}_top1_{draws['way']}way"]  # named for the way count actually run
        run[direction] = metric.value
        run[f"{direction}_item_interval"] = list(metric.interval) if metric.interval else None
    return run


def summarise_path(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "encoder": runs[0]["encoder"],
        "path": runs[0]["path"],
        "seeds": [r["seed"] for r in runs],
    }
    for direction in DIRECTIONS:
        values = [r[direction] for r in runs]
        seeds = t_interval(values)
        mean, interval = seeds.mean, seeds.as_tuple()
        if len(runs) == 1:  # no seed spread: the binomial interval over the test queries instead
            interval = wilson_interval(mean * runs[0]["n_test"], runs[0]["n_test"])
        summary[direction] = {
            "per_seed": values,
            "mean": mean,
            "interval": [max(0.0, interval[0]), min(1.0, interval[1])],  # an accuracy stays in [0, 1]
            "interval_kind": "t over seeds" if len(runs) > 1 else "Wilson over test queries",
        }
    summary["train_seconds"] = [r["train_seconds"] for r in runs]
    summary["train_seconds_mean"] = sum(summary["train_seconds"]) / len(runs)
    return summary


def compare(faithful: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    paired = len(faithful["seeds"]) > 1
    comparison: dict[str, Any] = {"encoder": faithful["encoder"], "rule": RULE_PAIRED if paired else RULE_OVERLAP}
    same = True
    for direction in DIRECTIONS:
        a, b = faithful[direction], fast[direction]
        differences = [y - x for x, y in zip(a["per_seed"], b["per_seed"], strict=True)]
        spread = t_interval(differences)
        difference, (low, high) = spread.mean, spread.as_tuple()
        if paired:
            interval: list[float] | None = [low, high]
            agrees = low <= 0.0 <= high
        else:  # one pair has no spread to put an interval on: the rule is the overlap
            interval = None
            agrees = a["interval"][0] <= b["interval"][1] and b["interval"][0] <= a["interval"][1]
        comparison[direction] = {
            "per_seed_difference": differences,
            "difference": difference,
            "interval": interval,
            "same": agrees,
        }
        same = same and agrees
    comparison["verdict"] = SAME if same else DIFFERENT
    return comparison


def settings_label(args: argparse.Namespace, encoder: str, path: str) -> str:
    import torch

    options, precision = PATHS[encoder][path][0], path_precision(args, encoder, path)
    amp = resolve_precision(precision, torch.device(args.device))
    from brainbench.low_precision_adamw import parameter_dtype

    parts = [f"impl={options['impl']}"] if "impl" in options else []
    optimizer = args.fast_optimizer if path == "fast" else "adamw"
    if parameter_dtype(optimizer) is not None:  # the trainer then runs bf16 autocast whatever the precision
        parts.append(f"precision {precision} (bf16 autocast, bf16 weights)")
    else:
        parts.append(f"precision {precision} ({'bf16 autocast' if amp is not None else 'fp32'})")
    if path == "fast" and args.fast_optimizer != "adamw":
        parts.append(f"optimizer {args.fast_optimizer}")
    return ", ".join(parts)


def interval_text(mean: float, interval: list[float] | None) -> str:
    return f"{mean:+.4f}" + (f" [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "")


def print_report(report: dict[str, Any], console: Console) -> None:
    s = report["settings"]
    way = report["runs"][0]["way"]
    table = Table(
        title=f"{way}-way top-1 retrieval, simulator scale {s['scale']}, subject {s['subject']}, "
        f"{s['device']}, seeds {','.join(map(str, s['seeds']))}"
    )
    for column in ("encoder", "path", "settings", "epochs"):
        table.add_column(column)
    for direction in DIRECTIONS:
        table.add_column(f"{ARROWS[direction]} per seed", justify="right")
        table.add_column(f"{ARROWS[direction]} mean [95%]", justify="right")
    table.add_column("train s/run", justify="right")
    epochs = {(r["encoder"], r["path"]): r["epochs"] for r in report["runs"]}
    for p in report["paths"]:
        cells = []
        for direction in DIRECTIONS:
            d = p[direction]
            cells += [
                " ".join(f"{v:.3f}" for v in d["per_seed"]),
                f"{d['mean']:.3f} [{d['interval'][0]:.3f}, {d['interval'][1]:.3f}]",
            ]
        table.add_row(
            p["encoder"],
            p["path"],
            p["settings"],
            str(epochs[(p["encoder"], p["path"])]),
            *cells,
            f"{p['train_seconds_mean']:.1f}",
        )
    console.print(table)

    verdicts = Table(title="fast - faithful")
    for column in ("encoder", *(f"{ARROWS[d]} difference [95%]" for d in DIRECTIONS), "verdict"):
        verdicts.add_column(column)
    for c in report["comparisons"]:
        verdicts.add_row(
            c["encoder"], *(interval_text(c[d]["difference"], c[d]["interval"]) for d in DIRECTIONS), c["verdict"]
        )
    console.print(verdicts)
    for c in report["comparisons"]:
        console.print(f"{c['encoder']}: [bold]{c['verdict']}[/bold] (rule: {c['rule']})")
    if way < WAY:
        console.print(f"note: only {report['runs'][0]['n_test']} test images at this scale: run as {way}-way")
    console.print(f"wall time {report['wall_seconds']:.1f} s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console, log = Console(), Console(stderr=True)
    started = time.perf_counter()
    with ExitStack() as stack:
        if not os.environ.get("BRAINBENCH_HOME"):
            os.environ["BRAINBENCH_HOME"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="bbhome-"))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="same-accuracy-")))
        runs: list[dict[str, Any]] = []
        for encoder in args.encoders:
            for seed in args.seeds:  # seed by seed, both paths: a run cut short still leaves pairs
                for path in PATHS[encoder]:
                    run = train_one(args, encoder, path, seed, work)
                    runs.append(run)
                    if args.json:  # a run cut short by an outer timeout keeps the runs it finished
                        args.json.write_text(json.dumps({"partial": True, "runs": runs}) + "\n")
                    log.print(
                        f"{encoder} {path} seed {seed}: "
                        + ", ".join(f"{ARROWS[d]} {run[d]:.3f}" for d in DIRECTIONS)
                        + f", trained in {run['train_seconds']:.1f} s"
                    )
    paths = []
    for encoder in args.encoders:
        for path in PATHS[encoder]:
            summary = summarise_path([r for r in runs if (r["encoder"], r["path"]) == (encoder, path)])
            paths.append({**summary, "settings": settings_label(args, encoder, path)})
    by_key = {(p["encoder"], p["path"]): p for p in paths}
    import torch

    report = {
        "settings": {"scale": args.scale, "subject": args.subject, "seeds": args.seeds, "epochs": args.epochs,
                     "budget": args.budget, "device": args.device, "target": args.target, "options": args.options,
                     "fast_precision": args.fast_precision, "fast_optimizer": args.fast_optimizer,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
        "runs": runs,
        "paths": paths,
        "comparisons": [compare(by_key[(e, "faithful")], by_key[(e, "fast")]) for e in args.encoders],
        "wall_seconds": time.perf_counter() - started,
    }  # fmt: skip
    print_report(report, console)
    text = json.dumps(report)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
