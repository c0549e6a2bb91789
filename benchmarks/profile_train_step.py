"""Where a training step's time goes: torch.profiler over a few steps, plus op, byte and FLOP counts.

    python benchmarks/profile_train_step.py --json profile.json             # one GPU, NSD subject-1 shapes
    python benchmarks/profile_train_step.py --tiny --device cpu              # seconds on a CPU

For each case (Lite-Mind and MindEye, faithful and fast; the same cases and settings as
``bench_train_speed.py``, whose ``prepare`` builds them) it reports:

- from torch.profiler over ``--steps`` steps after ``--warmup``: the top ``--top`` kernels (CUDA) or ops
  (CPU) by self time per step, kernel launches per step (CUDA; on the CPU: aten ops per step), and the
  profiled ms per step;
- from one EAGER step counted op by op (a TorchDispatchMode; compiled code is invisible to it, so this is
  the unfused formulation): aten ops per step, bytes read + written by them (an upper bound of the memory
  traffic: each op's inputs and outputs as if none stayed in cache or were fused) and FLOPs
  (torch.utils.flop_counter); with the card's peaks (``--peak-tflops``, ``--peak-tbps``: the H200's bf16
  dense ~790 TFLOP/s and ~4.8 TB/s by default) the roofline floor max(FLOPs / peak, bytes / bandwidth).

The last line printed is the report as JSON (``--json PATH`` writes it too).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train_speed as speed  # noqa: E402  (the benchmark's cases and preparation, not a copy)

from brainbench.devices import resolve_device, synchronize  # noqa: E402

PEAK_TFLOPS = 790.0  # H200 bf16 dense (anchors.md)
PEAK_TBPS = 4.8  # H200 HBM3e


class OpCounter(TorchDispatchMode):
    """Counts aten ops and the bytes of their tensor inputs and outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        if name in ("aten.detach", "aten.view", "aten._unsafe_view", "aten.t", "aten.transpose", "aten.expand",
                    "aten.permute", "aten.slice", "aten.select", "aten.unsqueeze", "aten.squeeze", "aten.alias"):
            return out  # metadata only: no kernel, no traffic  # fmt: skip
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.ops[name] += 1
        self.bytes[name] += sum(t.numel() * t.element_size() for t in tensors)
        return out


def eager_counts(case: speed.Case, shapes: speed.Shapes, device: torch.device, args: argparse.Namespace) -> dict:
    """One uncompiled step counted op by op: ops, bytes moved (upper bound), FLOPs and the roofline floor."""
    from torch.utils.flop_counter import FlopCounterMode

    uncompiled = speed.replace(case, compile=False)
    prepared = speed.prepare(uncompiled, shapes, device, args)
    prepared.step(*next(prepared.batches))  # optimizer state exists from here on
    counter, flops = OpCounter(), FlopCounterMode(display=False)
    with flops, counter:
        prepared.step(*next(prepared.batches))
    total_bytes, total_flops = sum(counter.bytes.values()), flops.get_total_flops()
    floor_ms = max(total_flops / (args.peak_tflops * 1e12), total_bytes / (args.peak_tbps * 1e12)) * 1000
    del prepared
    gc.collect()
    return {
        "eager_ops_per_step": sum(counter.ops.values()),
        "eager_bytes_per_step": total_bytes,
        "flops_per_step": total_flops,
        "roofline_floor_ms": floor_ms,
        "top_ops_by_bytes": [
            {"op": name, "count": counter.ops[name], "gb": counter.bytes[name] / 1e9}
            for name, _ in counter.bytes.most_common(args.top)
        ],
    }


def profiled(case: speed.Case, shapes: speed.Shapes, device: torch.device, args: argparse.Namespace) -> dict:
    """torch.profiler over ``args.steps`` steps of the case as benchmarked (compiled where it would be)."""
    from torch.profiler import ProfilerActivity, profile

    prepared = speed.prepare(case, shapes, device, args)
    first_step_s = 0.0
    for i in range(args.warmup):
        synchronize(device)
        started = time.perf_counter()
        prepared.step(*next(prepared.batches))
        synchronize(device)
        if i == 0:  # compilation included (with a warm inductor cache: the cached compile time)
            first_step_s = time.perf_counter() - started
    synchronize(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            prepared.step(*next(prepared.batches))
        synchronize(device)
    wall_ms = (time.perf_counter() - started) * 1000 / args.steps
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in events if getattr(e, "self_device_time_total", 0) > 0]
        launches = sum(e.count for e in kernels)
        key = "self_device_time_total"
    else:
        kernels = [e for e in events if e.key.startswith("aten::")]
        launches = sum(e.count for e in kernels)
        key = "self_cpu_time_total"
    kernels.sort(key=lambda e: getattr(e, key), reverse=True)
    total_us = sum(getattr(e, key) for e in kernels) or 1.0
    del prepared
    gc.collect()
    return {
        "profiled_ms_per_step": wall_ms,
        "first_step_s": first_step_s,
        "launches_per_step": launches / args.steps,
        "launch_kind": "CUDA kernels" if cuda else "aten ops (CPU)",
        "busy_ms_per_step": total_us / 1000 / args.steps,
        "top": [
            {
                "name": e.key[:120],
                "calls_per_step": e.count / args.steps,
                "ms_per_step": getattr(e, key) / 1000 / args.steps,
                "share": getattr(e, key) / total_us,
            }
            for e in kernels[: args.top]
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoders", default="litemind,mindeye")
    parser.add_argument("--paths", default="faithful,fast", help="faithful and/or fast")
    parser.add_argument("--small", action="store_true", help="the speed benchmark's small shapes")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke test in seconds")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps before profiling (compilation included)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the Lite-Mind fast step as the benchmark does (default: on CUDA)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--compile-scope", default="auto")
    parser.add_argument("--no-eager-counts", dest="eager_counts", action="store_false",
                        help="skip the op-by-op count of an eager step")
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS)
    parser.add_argument("--peak-tbps", type=float, default=PEAK_TBPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if set(args.encoders) - {"litemind", "mindeye"} or set(args.paths) - {"faithful", "fast"}:
        parser.error("--encoders takes litemind,mindeye and --paths faithful,fast")
    # what bench_train_speed.build_cases reads
    args.litemind_variants, args.mindeye_optimizers, args.mindeye_batch = [], [], None
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.compile is None:
        args.compile = device.type == "cuda"
    if device.type == "cpu":
        torch.set_num_threads(1)
    shapes = speed.TINY if args.tiny else speed.SMALL if args.small else speed.NSD_SUBJECT_1
    started = time.perf_counter()
    cases = [c for c in speed.build_cases(args, shapes, device)
             if c.path in args.paths and not c.master_weights]  # fmt: skip
    # the quick cases first, the compiled Lite-Mind step last: a run cut short keeps the most
    cases.sort(key=lambda c: (c.encoder == "litemind", c.compile))
    report: dict[str, Any] = {"device": speed.device_name(device), "torch": torch.__version__, "cases": []}
    for case in cases:
        print(f"profiling {case.label} ({case.settings()})...", file=sys.stderr)
        entry: dict[str, Any] = {"label": case.label, "settings": case.settings()}
        try:
            with speed.tf32_matmuls(case.tf32):
                entry.update(profiled(case, shapes, device, args))
                if args.eager_counts:
                    entry.update(eager_counts(case, shapes, device, args))
        except Exception as error:  # one failing case must not lose the others
            entry["error"] = f"{type(error).__name__}: {error}"
        speed.recover(device)
        report["cases"].append(entry)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report) + "\n")
    report["total_s"] = time.perf_counter() - started
    for entry in report["cases"]:
        if "error" in entry:
            print(f"{entry['label']}: FAILED {entry['error'][:300]}", file=sys.stderr)
            continue
        line = (f"{entry['label']}: {entry['profiled_ms_per_step']:.2f} ms/step profiled, "
                f"{entry['launches_per_step']:.0f} {entry['launch_kind']} per step")  # fmt: skip
        if "eager_ops_per_step" in entry:
            line += (f"; eager: {entry['eager_ops_per_step']} ops, {entry['eager_bytes_per_step'] / 1e9:.2f} GB moved "
                     f"(upper bound), {entry['flops_per_step'] / 1e9:.1f} GFLOP, roofline floor "
                     f"{entry['roofline_floor_ms']:.2f} ms")  # fmt: skip
        print(line, file=sys.stderr)
        for row in entry["top"][:5]:
            print(f"    {row['share']:6.1%} {row['ms_per_step']:8.3f} ms x{row['calls_per_step']:.0f}  {row['name']}",
                  file=sys.stderr)  # fmt: skip
    text = json.dumps(report)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
