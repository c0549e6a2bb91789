"""Training-step speed of Lite-Mind and MindEye: the faithful reference path against the fast path (issue 7).

    python benchmarks/bench_train_speed.py                          # one GPU, NSD subject-1 shapes, < 5 min
    python benchmarks/bench_train_speed.py --mindeye-batch 128      # adds a MindEye fast row at batch 128
    python benchmarks/bench_train_speed.py --small --device cpu     # the CPU fallback CI runs (seconds)

In one process on one device it times the training step (batch slice, forward, loss, backward, AdamW step):

- litemind faithful: complex torch.fft, eager fp32, default AdamW (the reference as published);
- litemind fast: real DFT matmuls and the head folded into the loss (impl="fast"), bf16 autocast + TF32 +
  fused AdamW + torch.compile on CUDA;
- mindeye faithful: fp16 autocast + GradScaler on CUDA, default AdamW, batch 32, CLIP targets precomputed;
- mindeye fast: bf16 autocast + fused AdamW on CUDA, precomputed targets, optionally a larger batch;
- mindeye fast bf16-weights: the weights themselves in bf16 with fp32 master weights and moments in the
  optimizer, one fused (compiled on CUDA) update per tensor (``--precision bf16-master`` in training).

On the CPU every path runs in fp32 (no autocast, no fused AdamW, no compile unless asked), so CPU ratios show
only what the formulation changes. Data are random with the real shapes, staged on the device once (a pool of
two batches) and sliced there each step. Reports the median of ``--steps`` timed steps after ``--warmup``
steps, samples/s, peak memory, the fast/faithful ratios, the projected whole-run time, the issue's targets
(GPU only) and a same-function check (fast vs faithful Lite-Mind outputs in fp32). ``--json PATH`` writes the
figures as JSON; the last line printed is that JSON too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from brainbench.devices import resolve_device, resolve_precision, synchronize
from brainbench.schedules import scaled_lr
from brainbench.staging import StagedSource
from brainbench.torch_encoder import TorchEncoder
from brainbench.training import build_optimizer, parameter_groups, trainable_modules

TRIALS_PER_EPOCH = 24_980  # NSD subject 1's training trials (anchors.md)
EPOCHS = {"litemind": 1500, "mindeye": 240}
# issue 7's targets on one H100/H200, at the reference batch sizes, and the reference's peak memory
TARGET_SAMPLES_PER_S = {"litemind": 57_700, "mindeye": 2_800}
REFERENCE_PEAK_GB = {"litemind": 21.2, "mindeye": 17.8}
REFERENCE_BATCH = {"litemind": 1000, "mindeye": 32}
#: The MindEye reference encodes each batch with CLIP ViT-L/14 (fp16, batch 32, H200): ms per step.
CLIP_ENCODE_MS = 14.4
#: Relative error the fp32 same-function check accepts (the DFT rewrite measured ~3e-6).
SAME_FUNCTION_TOLERANCE = 1e-4
#: The verdict is taken in float64, where the two formulations agree to ~1e-12: in fp32 the reference's
#: LayerNorm eps 1e-6 over the filter's tiny outputs amplifies rounding (1.7e-4 seen at 33 tokens), which
#: says nothing about the formulation. The fp32 figures are still reported.
SAME_FUNCTION_TOLERANCE_FP64 = 1e-9


@dataclass(frozen=True)
class Shapes:
    """Problem size: data shapes, batch sizes and the encoder options that shrink the models."""

    n_voxels: int
    target_shape: tuple[int, int]
    litemind_batch: int
    mindeye_batch: int
    litemind_options: dict[str, Any] = field(default_factory=dict)
    mindeye_options: dict[str, Any] = field(default_factory=dict)


NSD_SUBJECT_1 = Shapes(15724, (257, 768), 1000, 32)
# odd token count (33) like the real 34/31/28, a token target, the reference depths; seconds on a CPU
SMALL = Shapes(
    2000, (17, 64), 64, 16,
    litemind_options={"patch_size": 60, "widths": (64, 32, 16)},
    mindeye_options={"hidden": 256, "projector_hidden": 256},
)  # fmt: skip
# one block per stage, 10 tokens: every code path in seconds (gpu_check.sh --cpu-smoke), compile included
TINY = Shapes(
    600, (5, 16), 16, 8,
    litemind_options={"patch_size": 60, "widths": (16, 8, 4), "depths": (1, 1, 1, 1)},
    mindeye_options={"hidden": 64, "projector_hidden": 32},
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One way of running the training step."""

    encoder: str  # litemind | mindeye
    path: str  # faithful | fast
    batch: int
    amp_dtype: torch.dtype | None
    grad_scaler: bool = False
    fused_adamw: bool = False
    compile: bool = False
    tf32: bool = False
    master_weights: bool = False  # bf16 weights, fp32 masters in brainbench.master_weights.MasterWeightAdamW
    optimizer: str = "adamw"  # the trainer's --optimizer (brainbench.low_precision_adamw)
    variant: str = ""  # a named lever variant (LITEMIND_VARIANTS), shown in the label
    options: tuple[tuple[str, Any], ...] = ()  # extra encoder options of the variant
    scope: str = "auto"  # Lite-Mind compile scope (LiteMindEncoder.compile_model)
    mode: str | None = None  # torch.compile mode; None: --compile-mode
    optional: bool = False  # skipped once --time-budget is spent

    @property
    def label(self) -> str:
        label = f"{self.encoder} {self.path} b{self.batch}" + " bf16-weights" * self.master_weights
        if self.optimizer != "adamw":
            label += f" {self.optimizer}"
        return label + (f" {self.variant}" if self.variant else "")

    def settings(self) -> str:
        parts = [{None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]]
        parts += ["GradScaler"] * self.grad_scaler + ["TF32"] * self.tf32
        if self.master_weights:
            parts += ["bf16 weights + fp32 master AdamW" + (" (compiled update)" if self.fused_adamw else "")]
        elif self.optimizer != "adamw":
            from brainbench.low_precision_adamw import describe_optimizer

            parts += [describe_optimizer(self.optimizer)]
        else:
            parts += ["fused AdamW" if self.fused_adamw else "AdamW"]
        parts += [f"{key}={value}" for key, value in self.options]
        if self.compile:
            scope = f" scope {self.scope}" if self.encoder == "litemind" else ""
            parts += [f"compile{scope}" + (f" mode {self.mode}" if self.mode else "")]
        return ", ".join(parts)


@dataclass
class Result:
    label: str
    encoder: str
    path: str
    batch: int
    settings: str
    ms_per_step: float
    samples_per_s: float
    peak_memory_gb: float
    memory_kind: str
    first_step_s: float  # includes compilation when compiled
    final_loss: float
    whole_run_min: float
    step_ms: list[float]


# ------------------------------------------------------------------------------------------- models


def make_encoder(name: str, shapes: Shapes, **extra: Any) -> TorchEncoder:
    if name == "litemind":
        from brainbench_litemind.encoder import LiteMindEncoder

        return LiteMindEncoder(**shapes.litemind_options, **extra)
    from brainbench_mindeye.encoder import MindEyeEncoder

    return MindEyeEncoder(**shapes.mindeye_options, **extra)


class TrainingLoss(torch.nn.Module):
    """Forward + loss as one module, so torch.compile sees (and can fuse) both."""

    def __init__(self, model: torch.nn.Module, objective: Any, progress: float) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.progress = progress

    def forward(self, voxels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.objective(self.model, voxels, targets, self.progress)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """TF32 for matmuls and convolutions inside the block only (the fp32 baseline keeps torch's defaults)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory of one case: max_memory_allocated on CUDA, peak RSS growth (VmHWM) on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "GPU max allocated" if device.type == "cuda" else "RSS growth"
        self.start_rss = 0
        self.start_maxrss = 0
        self.hwm_reset = False

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        release_freed_host_memory()  # else memory freed by the previous case hides this one's growth
        self.start_rss = _proc_status_kb("VmRSS")
        self.start_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:  # "5" resets the high-water mark (Linux >= 4.0), so each case gets its own peak
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False

    def peak_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 1e9
        if self.hwm_reset and self.start_rss:
            return max(0, _proc_status_kb("VmHWM") - self.start_rss) * 1024 / 1e9
        # no /proc: growth of the process's lifetime peak (an underestimate after a bigger earlier case)
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.start_maxrss) * 1024 / 1e9


def release_freed_host_memory() -> None:
    """glibc keeps freed blocks mapped (RSS stays high); malloc_trim hands them back to the OS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _proc_status_kb(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------- timing


def endless_batches(source: StagedSource) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        yield from source.batches(epoch)
        epoch += 1


def make_step(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    case: Case,
    device: torch.device,
    cudagraphs: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    scaler = torch.amp.GradScaler(device.type) if case.grad_scaler else None
    autocast = (
        torch.autocast(device.type, dtype=case.amp_dtype) if case.amp_dtype else contextlib.nullcontext()
    )

    def step(voxels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if cudagraphs and device.type == "cuda":  # a new training iteration: the graph's outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            loss = loss_fn(voxels, targets)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone()  # a copy: CUDA-graph outputs are overwritten by the next replay

    return step


@dataclass
class Prepared:
    """What one case's timed loop needs; dropped as a whole afterwards."""

    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]


def prepare(case: Case, shapes: Shapes, device: torch.device, args: argparse.Namespace) -> Prepared:
    """Model, objective, optimizer and a staged pool of data on ``device``, as ``case`` says."""
    torch.manual_seed(args.seed)
    extra = {"impl": case.path} if case.encoder == "litemind" else {}
    encoder = make_encoder(case.encoder, shapes, **extra, **dict(case.options))
    with torch.device(device):  # parameters are created on the device (947M for MindEye: no host init)
        model = encoder.build(shapes.n_voxels, shapes.target_shape)
    objective = encoder.objective(shapes.target_shape)
    if isinstance(objective, torch.nn.Module):
        objective.to(device)
    model.train()
    defaults = encoder.defaults
    groups = parameter_groups(encoder, trainable_modules(model, objective), defaults.weight_decay)
    # linear scaling rule from the reference batch (Lite-Mind's recipe: 512; MindEye: 32); speed ignores lr
    lr = scaled_lr(defaults.lr, case.batch, defaults.lr_reference_batch or REFERENCE_BATCH[case.encoder])
    if case.master_weights:  # the trainer's --precision bf16-master: casts the model to bf16 here
        optimizer: torch.optim.Optimizer = build_optimizer(groups, lr, device, master_weights=True)
    elif case.optimizer != "adamw":  # the trainer's --optimizer: torchao states (casts bf16-weight ones)
        optimizer = build_optimizer(groups, lr, device, optimizer=case.optimizer)
    elif case.fused_adamw:
        optimizer = build_optimizer(groups, lr, device)  # the trainer's: fused on CUDA
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr)
    pool = 2 * case.batch  # two batches staged on the device; a step slices one with index_select
    source = StagedSource(
        torch.randn(pool, shapes.n_voxels, device=device),
        torch.randn(pool, *shapes.target_shape, device=device),
        case.batch,
        seed=args.seed,
    )
    # MindEye: the SoftCLIP phase (two thirds of a run); Lite-Mind's objective ignores progress
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = TrainingLoss(model, objective, progress=0.5)
    mode = case.mode or args.compile_mode
    if case.compile and case.encoder == "litemind":  # what the trainer does (scope auto: step for the fast path)
        encoder.compile_model(model, mode, scope=case.scope, backend=args.compile_backend)
    elif case.compile:
        encoder.compile_model(model, mode)
    return Prepared(make_step(loss_fn, optimizer, case, device, cudagraphs=mode == "reduce-overhead"),
                    endless_batches(source))  # fmt: skip


def time_steps(
    prepared: Prepared, warmup: int, steps: int, device: torch.device
) -> tuple[list[float], float, float]:
    """Seconds of each timed step, the first step's seconds (compilation included) and the last loss."""
    times: list[float] = []
    first_step_s = 0.0
    loss = torch.zeros(())
    for i in range(warmup + steps):
        synchronize(device)
        started = time.perf_counter()
        voxels, targets = next(prepared.batches)
        loss = prepared.step(voxels, targets)
        synchronize(device)
        elapsed = time.perf_counter() - started
        if i == 0:
            first_step_s = elapsed
        if i >= warmup:
            times.append(elapsed)
    return times, first_step_s, float(loss)


def recover(device: torch.device) -> None:
    """After a failed case: drop compiled graphs and cached memory so the next case starts clean."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_case(case: Case, shapes: Shapes, device: torch.device, args: argparse.Namespace) -> Result:
    memory = PeakMemory(device)
    memory.start()
    with tf32_matmuls(case.tf32):
        prepared = prepare(case, shapes, device, args)
        times, first_step_s, final_loss = time_steps(prepared, args.warmup, args.steps, device)
    peak_gb = memory.peak_gb()
    del prepared
    if case.compile:
        torch._dynamo.reset()  # drop the compiled graphs (and the memory they hold) before the next case
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    ms = statistics.median(times) * 1000
    samples_per_s = case.batch / (ms / 1000)
    return Result(
        label=case.label,
        encoder=case.encoder,
        path=case.path,
        batch=case.batch,
        settings=case.settings(),
        ms_per_step=ms,
        samples_per_s=samples_per_s,
        peak_memory_gb=peak_gb,
        memory_kind=memory.kind,
        first_step_s=first_step_s,
        final_loss=final_loss,
        whole_run_min=TRIALS_PER_EPOCH * EPOCHS[case.encoder] / samples_per_s / 60,
        step_ms=[t * 1000 for t in times],
    )


# --------------------------------------------------------------------------------------- same function


def same_function_check(shapes: Shapes, device: torch.device, seed: int) -> dict[str, Any]:
    """Lite-Mind fast vs faithful on one batch, same weights, eval mode, fp32 without TF32: outputs and loss.

    On CUDA also the error of the fast path's bf16 autocast against the fp32 faithful output (information:
    what the fast path's precision changes, not a formulation error).
    """
    torch.manual_seed(seed)
    faithful_encoder = make_encoder("litemind", shapes, impl="faithful")
    fast_encoder = make_encoder("litemind", shapes, impl="fast")
    with torch.device(device):
        faithful = faithful_encoder.build(shapes.n_voxels, shapes.target_shape).eval()
        fast = fast_encoder.build(shapes.n_voxels, shapes.target_shape).eval()
    fast.load_state_dict(faithful.state_dict())
    voxels = torch.randn(min(shapes.litemind_batch, 64), shapes.n_voxels, device=device)
    targets = torch.randn(len(voxels), *shapes.target_shape, device=device)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            reference = faithful(voxels)
            error = relative_error(fast(voxels), reference)
            # the training loss too: the fast path's objective folds the head into the similarities
            losses = [
                encoder.objective(shapes.target_shape).to(device)(model, voxels, targets, 0.5)
                for encoder, model in ((faithful_encoder, faithful), (fast_encoder, fast))
            ]
            loss_error = relative_error(losses[1], losses[0])
            faithful64, fast64 = faithful.double(), fast.double()
            error64 = relative_error(fast64(voxels.double()), faithful64(voxels.double()))
            faithful.float(), fast.float()
            # bf16 autocast (CPU autocast too): the fast path as it trains (spectral ops in fp32), the same
            # with its spectral ops in bf16 (before), and the faithful path's own bf16 error for scale
            bf16_errors = {}
            for name, model, precision in (("fast", fast, "fp32"), ("fast_spectral_bf16", fast, "autocast"),
                                           ("faithful", faithful, None)):  # fmt: skip
                for module in model.modules():
                    if precision and hasattr(module, "configure"):
                        module.configure(precision, module.spectral_kernel)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    bf16_errors[name] = relative_error(model(voxels).float(), reference)
            for module in fast.modules():
                if hasattr(module, "configure"):
                    module.configure("fp32", module.spectral_kernel)
            bf16_error = bf16_errors["fast"]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    tokens = faithful.cfg.n_tokens
    del faithful, fast
    gc.collect()
    return {
        "tokens": tokens,
        "rows": int(voxels.shape[0]),
        "max_relative_error_fp32": error,
        "loss_relative_error_fp32": loss_error,
        "max_relative_error_fp64": error64,
        "tolerance": SAME_FUNCTION_TOLERANCE_FP64,
        "passed": error64 <= SAME_FUNCTION_TOLERANCE_FP64,
        "max_relative_error_fast_bf16_vs_faithful_fp32": bf16_error,
        "max_relative_error_fast_bf16_spectral_bf16_vs_faithful_fp32": bf16_errors["fast_spectral_bf16"],
        "max_relative_error_faithful_bf16_vs_faithful_fp32": bf16_errors["faithful"],
    }


def head_loss_timing(shapes: Shapes, device: torch.device, steps: int) -> dict[str, Any]:
    """Lite-Mind's head + InfoNCE alone, forward + backward: the prediction built and normalised (faithful)
    vs the head folded into the similarities (fast), both in the fast path's precision, so the difference is
    the formulation's. Always NSD subject 1's head (34 tokens -> 257x768), at the benchmark's Lite-Mind batch
    (64 with --small). Peak memory is the GPU's (0 on the CPU)."""
    from brainbench.losses import InfoNCELoss
    from brainbench_litemind.fused_loss import head_cosines

    real = NSD_SUBJECT_1
    tokens = make_encoder("litemind", real).config_for(real.n_voxels, real.target_shape).n_tokens
    width, dim = real.target_shape
    batch = shapes.litemind_batch
    torch.manual_seed(0)
    with torch.device(device):
        head = torch.nn.Linear(tokens, dim)
        features = torch.randn(batch, tokens, width, requires_grad=True)
        targets = torch.randn(batch, width, dim)
    loss = InfoNCELoss(8.0, direction="image_to_fmri")
    forms = {
        "built": lambda: loss(head(features.transpose(1, 2)), targets),
        "folded": lambda: loss.from_cosines(head_cosines(features, head.weight, head.bias, targets)),
    }
    amp = resolve_precision("auto", device)
    out: dict[str, Any] = {"batch": batch, "tokens": tokens, "target_shape": [width, dim]}
    for name, form in forms.items():
        memory = PeakMemory(device)
        memory.start()
        times = []
        for i in range(steps + 1):
            synchronize(device)
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                value = form()
            value.backward()
            synchronize(device)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - started)
            features.grad = head.weight.grad = head.bias.grad = None
        out[f"{name}_ms"] = statistics.median(times) * 1000
        out[f"{name}_peak_gb"] = memory.peak_gb() if device.type == "cuda" else 0.0
    out["speedup"] = out["built_ms"] / out["folded_ms"]
    return out


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference|."""
    return float((value.double() - reference.double()).abs().max() / reference.double().abs().max())


# -------------------------------------------------------------------------------------------- report


def ratios(results: list[Result], device: torch.device) -> list[dict[str, Any]]:
    """Per fast row: its speed and memory against the faithful row of the same encoder, and the targets."""
    rows = []
    for fast in (r for r in results if r.path == "fast"):
        faithful = next((r for r in results if r.encoder == fast.encoder and r.path == "faithful"), None)
        if faithful is None:
            continue
        row: dict[str, Any] = {
            "label": fast.label,
            "speedup": fast.samples_per_s / faithful.samples_per_s,
            "memory_ratio": fast.peak_memory_gb / faithful.peak_memory_gb if faithful.peak_memory_gb else None,
            "target_samples_per_s": TARGET_SAMPLES_PER_S[fast.encoder],
            "reference_peak_gb": REFERENCE_PEAK_GB[fast.encoder],
            "target_met": None,
        }
        if fast.encoder == "mindeye" and device.type == "cuda":
            # the reference also encodes each batch with CLIP: its end-to-end step is ~14.4 ms longer
            end_to_end = faithful.batch / ((faithful.ms_per_step + CLIP_ENCODE_MS) / 1000)
            row["faithful_end_to_end_samples_per_s_est"] = end_to_end
            row["speedup_vs_end_to_end_est"] = fast.samples_per_s / end_to_end
        at_reference_batch = fast.batch == REFERENCE_BATCH[fast.encoder]
        row["target_scope"] = (
            "GPU only" if device.type != "cuda" else "at reference batch" if at_reference_batch
            else f"set for batch {REFERENCE_BATCH[fast.encoder]}"
        )
        if device.type == "cuda" and at_reference_batch:
            row["target_met"] = bool(
                fast.samples_per_s >= TARGET_SAMPLES_PER_S[fast.encoder]
                and fast.peak_memory_gb <= REFERENCE_PEAK_GB[fast.encoder]
            )
        rows.append(row)
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def print_report(console: Console, report: dict[str, Any], results: list[Result]) -> None:
    env = report["environment"]
    console.print(
        f"device: {env['device_name']} | torch {env['torch']} (CUDA {env['cuda']}) | python {env['python']}"
    )
    console.print(
        f"shapes: {env['n_voxels']} voxels -> {env['target_shape']} targets; warm-up {env['warmup']}, "
        f"median of {env['steps']} steps; compile {env['compile']} "
        f"(mode {env['compile_mode']}, scope {env['compile_scope']})"
    )
    table = Table(title="training step (batch slice + forward + loss + backward + AdamW)")
    for column in ("case", "settings", "ms/step", "samples/s", "peak GB", "first step s", "whole run", "loss"):
        table.add_column(column, justify="left" if column in ("case", "settings") else "right")
    for r in results:
        table.add_row(
            r.label, r.settings, f"{r.ms_per_step:.2f}", f"{r.samples_per_s:,.0f}", f"{r.peak_memory_gb:.3f}",
            f"{r.first_step_s:.2f}", f"{r.whole_run_min:,.1f} min ({EPOCHS[r.encoder]} ep)", f"{r.final_loss:.3f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"peak memory: {results[0].memory_kind if results else ''}")
    ratio_table = Table(title="fast / faithful")
    for column in ("fast case", "speedup", "memory ratio", "target", "met"):
        ratio_table.add_column(column, justify="left" if column == "fast case" else "right")
    for row in report["ratios"]:
        met = {True: "PASS", False: "FAIL"}.get(row["target_met"], "n/a (" + row["target_scope"] + ")")
        memory = f"{row['memory_ratio']:.2f}x" if row["memory_ratio"] is not None else "-"
        target = f">= {row['target_samples_per_s']:,} samples/s, <= {row['reference_peak_gb']} GB"
        ratio_table.add_row(row["label"], f"{row['speedup']:.2f}x", memory, target, met)
    console.print(ratio_table)
    for row in report["ratios"]:
        if "speedup_vs_end_to_end_est" in row:
            console.print(
                f"note: the MindEye reference also runs CLIP ViT-L/14 on each batch (+{CLIP_ENCODE_MS} ms/step at "
                f"batch 32 on an H200, anchors.md); faithful + CLIP here ~ "
                f"{row['faithful_end_to_end_samples_per_s_est']:,.0f} samples/s, so {row['label']} is "
                f"~{row['speedup_vs_end_to_end_est']:.2f}x that end to end (the CLIP figure is the H200's)."
            )
    timing = report.get("head_loss")
    if timing:
        built_gb, folded_gb = timing["built_peak_gb"], timing["folded_peak_gb"]
        memory = f"; peak {built_gb:.2f} vs {folded_gb:.2f} GB" if built_gb else ""
        console.print(
            f"Lite-Mind head + loss alone (batch {timing['batch']}, {timing['tokens']} tokens -> "
            f"{'x'.join(map(str, timing['target_shape']))}, forward + backward): prediction built "
            f"{timing['built_ms']:.2f} ms, head folded into the loss {timing['folded_ms']:.2f} ms "
            f"({timing['speedup']:.2f}x){memory}"
        )
    check = report.get("same_function")
    if check:
        bf16 = check["max_relative_error_fast_bf16_vs_faithful_fp32"]
        console.print(
            f"same function: Lite-Mind fast vs faithful, {check['rows']} rows, {check['tokens']} tokens, fp32: "
            f"max relative error {check['max_relative_error_fp32']:.2e}, "
            f"training loss (head folded into the loss) {check['loss_relative_error_fp32']:.2e}; fp64: "
            f"{check['max_relative_error_fp64']:.2e} ({'PASS' if check['passed'] else 'FAIL'} at "
            f"{check['tolerance']:.0e})"
            + (f"; bf16 autocast vs faithful fp32: fast {bf16:.2e} (spectral ops fp32), fast with spectral ops in "
               f"bf16 {check['max_relative_error_fast_bf16_spectral_bf16_vs_faithful_fp32']:.2e}, faithful "
               f"{check['max_relative_error_faithful_bf16_vs_faithful_fp32']:.2e}" if bf16 is not None else "")
        )


# ---------------------------------------------------------------------------------------------- main


#: Lite-Mind lever variants (--litemind-variants): fast-path settings timed beside the default fast row.
LITEMIND_VARIANTS: dict[str, dict[str, Any]] = {
    "blocks": {"scope": "blocks"},  # each block compiled in place (the default before step scope)
    "regions": {"scope": "regions"},  # step scope with one nested compile region per block shape
    "torch-chain": {"options": (("spectral_kernel", "torch"),)},  # inductor fuses the chain, no Triton kernel
    "bf16-spectral": {"options": (("spectral_precision", "autocast"),)},  # spectral ops in bf16 too
    "cudagraphs": {"mode": "reduce-overhead"},  # CUDA graphs around the compiled step
}
MINDEYE_OPTIMIZERS = ("adamw8bit", "adamw8bit-bf16", "adamw-bf16-states")


def build_cases(args: argparse.Namespace, shapes: Shapes, device: torch.device) -> list[Case]:
    """The faithful baselines and default fast rows first, then the optional lever variants."""
    cuda = device.type == "cuda"
    fast_dtype = resolve_precision("auto", device)  # bf16 on GPUs that have it, fp32 on the CPU
    cases = []
    if "litemind" in args.encoders:
        batch = shapes.litemind_batch
        fast = Case("litemind", "fast", batch, fast_dtype, fused_adamw=cuda, compile=args.compile, tf32=cuda,
                    scope=args.compile_scope)  # fmt: skip
        cases += [Case("litemind", "faithful", batch, None), fast]
        for name in args.litemind_variants:
            variant = LITEMIND_VARIANTS[name]
            if not args.compile and ("scope" in variant or "mode" in variant):
                continue  # a compile variant without compiling is the default row again
            cases.append(replace(fast, variant=name, optional=True, **variant))
    if "mindeye" in args.encoders:
        batch = shapes.mindeye_batch
        fast = Case("mindeye", "fast", batch, fast_dtype, fused_adamw=cuda, tf32=cuda)
        # bf16 weights need bf16 autocast (fp32 inputs meet bf16 weights) on the CPU too
        bf16_weights = replace(fast, amp_dtype=torch.bfloat16, master_weights=True)
        cases += [
            Case("mindeye", "faithful", batch, torch.float16 if cuda else None, grad_scaler=cuda),
            fast,
            bf16_weights,
        ]
        if args.mindeye_batch and args.mindeye_batch != batch:
            cases += [replace(fast, batch=args.mindeye_batch), replace(bf16_weights, batch=args.mindeye_batch)]
        for name in args.mindeye_optimizers:  # torchao states; the bf16-weight ones need bf16 autocast
            amp = torch.bfloat16 if name != "adamw8bit" else fast_dtype
            cases.append(replace(fast, amp_dtype=amp, optimizer=name, optional=True))
    # every table row first, then the optional levers: MindEye's (seconds each) before Lite-Mind's (a compile each)
    return sorted(cases, key=lambda case: (case.optional, case.optional and case.encoder == "litemind"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time Lite-Mind and MindEye training steps: faithful reference path vs fast path."
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; 3 with --small)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; 1 with --small)")
    parser.add_argument("--small", action="store_true", help="small shapes: the CPU fallback for CI")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, one block per stage: a smoke test")
    parser.add_argument("--encoders", default="litemind,mindeye", help="comma-separated: litemind,mindeye")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the Lite-Mind fast step (default: on for CUDA, off on the CPU)",
    )  # fmt: skip
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. reduce-overhead")
    parser.add_argument(
        "--compile-scope", choices=("auto", "step", "regions", "blocks"), default="auto",
        help="Lite-Mind: auto (the trainer's: step for the fast path) | step: forward + loss as one graph | "
        "regions: step with one nested compile region per block shape (shorter compile) | blocks: each block",
    )  # fmt: skip
    parser.add_argument(
        "--compile-backend", default="inductor",
        help="torch.compile backend (inductor; aot_eager traces without code generation: the CPU smoke test)",
    )
    parser.add_argument(
        "--litemind-variants", default="",
        help=f"also time these fast-path variants (comma-separated): {', '.join(LITEMIND_VARIANTS)}",
    )
    parser.add_argument(
        "--mindeye-optimizers", default="",
        help=f"also time MindEye fast with these optimizers (comma-separated): {', '.join(MINDEYE_OPTIMIZERS)}",
    )
    parser.add_argument(
        "--time-budget", type=float, default=None,
        help="seconds: once spent, the optional variants left are skipped (recorded as skipped)",
    )  # fmt: skip
    parser.add_argument("--mindeye-batch", type=int, default=None, help="also time MindEye fast at this batch")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on the CPU: a shared CI box)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    args.encoders = [name.strip() for name in args.encoders.split(",") if name.strip()]
    unknown = sorted(set(args.encoders) - {"litemind", "mindeye"})
    if unknown or not args.encoders:
        parser.error(f"--encoders takes litemind and/or mindeye, got {args.encoders}")
    args.litemind_variants = [v.strip() for v in args.litemind_variants.split(",") if v.strip()]
    args.mindeye_optimizers = [v.strip() for v in args.mindeye_optimizers.split(",") if v.strip()]
    for given, known, flag in ((args.litemind_variants, LITEMIND_VARIANTS, "--litemind-variants"),
                               (args.mindeye_optimizers, MINDEYE_OPTIMIZERS, "--mindeye-optimizers")):
        if set(given) - set(known):
            parser.error(f"{flag}: unknown {sorted(set(given) - set(known))}; known: {', '.join(known)}")
    args.small = args.small or args.tiny
    args.steps = args.steps if args.steps is not None else (3 if args.small else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.small else 3)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.compile is None:
        args.compile = device.type == "cuda"
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    shapes = TINY if args.tiny else SMALL if args.small else NSD_SUBJECT_1
    console = Console(width=160)
    started = time.perf_counter()
    results, failed, skipped = [], [], []

    def save_partial() -> None:  # a run killed by an outer timeout still leaves the cases it finished
        if args.json:
            partial = {"partial": True, "results": [asdict(r) for r in results], "failed": failed}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(partial) + "\n")

    for case in build_cases(args, shapes, device):
        save_partial()
        if case.optional and args.time_budget is not None and time.perf_counter() - started > args.time_budget:
            skipped.append(case.label)
            continue
        console.print(f"[dim]timing {case.label} ({case.settings()})...[/dim]")
        try:
            results.append(run_case(case, shapes, device, args))
        except Exception as error:  # one failing case (OOM, a missing library) must not lose the others
            message = f"{type(error).__name__}: {error}"
            failed.append({"label": case.label, "settings": case.settings(), "error": message})
            console.print(f"[red]{case.label} failed: {failed[-1]['error'][:500]}[/red]")
            recover(device)
    same = same_function_check(shapes, device, args.seed) if "litemind" in args.encoders else None
    head_loss = head_loss_timing(shapes, device, args.steps) if "litemind" in args.encoders else None
    report = {
        "environment": {
            "device": str(device),
            "device_name": device_name(device),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "n_voxels": shapes.n_voxels,
            "target_shape": list(shapes.target_shape),
            "small": args.small,
            "steps": args.steps,
            "warmup": args.warmup,
            "compile": args.compile,
            "compile_mode": args.compile_mode,
            "compile_scope": args.compile_scope,
            "compile_backend": args.compile_backend,
        },
        "results": [asdict(r) for r in results],
        "failed": failed,
        "skipped": skipped,
        "ratios": ratios(results, device),
        "same_function": same,
        "head_loss": head_loss,
        "total_s": time.perf_counter() - started,
    }
    print_report(console, report, results)
    for item in failed:
        console.print(f"[red]failed: {item['label']}: {item['error'][:300]}[/red]")
    if skipped:
        console.print(f"skipped (--time-budget {args.time_budget} s spent): {', '.join(skipped)}")
    console.print(f"total {report['total_s']:.1f} s")
    line = json.dumps(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    print(line)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
