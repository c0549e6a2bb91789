"""The one training loop every torch encoder uses.

AdamW with per-parameter weight decay, the encoder's learning-rate schedule, bf16 autocast on GPUs, gradient
clipping, checkpoints that let a killed run resume and finish with exactly the weights of an uninterrupted
one (on the CPU), and opt-in early stopping.

The data rule (see :class:`brainbench.interfaces.FitData`): the returned model is trained on ALL training
rows. Only early stopping uses the validation rows: a selection run trains on the other rows and scores a
fixed criterion on the validation rows each epoch to choose the number of epochs, then the model is trained
again on all rows for that many epochs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.checkpoint import (
    CHECKPOINT_NAME,
    MODEL_NAME,
    atomic_torch_save,
    capture_rng_states,
    load_checkpoint,
    load_model_file,
    model_metadata,
    restore_rng_states,
    save_model_file,
)
from brainbench.config import COMPILE_MODES
from brainbench.devices import (
    resolve_device,
    resolve_precision,
    seed_everything,
    synchronize,
    uses_master_weights,
)
from brainbench.errors import BrainbenchError, CheckpointMismatchError, DataError
from brainbench.interfaces import FitData, FittedEncoder, Reporter, Shape, TrainSettings
from brainbench.low_precision_adamw import (
    OPTIMIZERS,
    build_low_precision_adamw,
    cast_parameters,
    describe_optimizer,
    parameter_dtype,
)
from brainbench.master_weights import MasterWeightAdamW
from brainbench.reporting import duration
from brainbench.schedules import LearningRateSchedule, build_schedule, scaled_lr
from brainbench.staging import BatchSource, make_batch_source
from brainbench.torch_encoder import EpochAware

if TYPE_CHECKING:  # annotations only: TorchEncoder.fit imports this module
    from brainbench.torch_encoder import Objective, TorchEncoder

#: Rows of the validation similarity matrix computed at once (bounds memory for 257x768 targets).
SIMILARITY_CHUNK = 1024
#: Early stopping compares this criterion: InfoNCE (fMRI -> image) over the whole validation set at a FIXED
#: temperature, so it means the same every epoch whatever the objective does (MindEye switches from
#: BiMixCo to SoftCLIP and anneals its temperature; a batch loss also depends on the batch's composition).
SELECTION_METRIC = "val_nce"
SELECTION_TEMPERATURE = 0.05
DATA_PATHS = {"device": "data staged in device memory", "stream": "data streamed by a prefetch thread"}


# ------------------------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Recipe:
    """The training plan in force: encoder defaults overridden by the run's settings."""

    epochs: int
    batch_size: int
    base_lr: float
    lr: float  # base_lr scaled for the batch size
    weight_decay: float
    schedule: str
    warmup_epochs: int
    warmup_start_lr: float
    min_lr: float
    grad_clip: float | None
    seed: int
    early_stopping: int | None
    val_every: int
    drop_last: bool = True
    checkpoint_every: int = 1
    lr_reference_batch: int | None = None

    def as_params(self) -> dict[str, Any]:
        return {f"train.{key}": value for key, value in asdict(self).items()}


def resolve_recipe(encoder: TorchEncoder, settings: TrainSettings) -> Recipe:
    defaults = encoder.training_defaults()
    epochs = settings.epochs if settings.epochs is not None else defaults.epochs
    batch_size = settings.batch_size if settings.batch_size is not None else defaults.batch_size
    base_lr = settings.lr if settings.lr is not None else defaults.lr
    if epochs < 1 or batch_size < 1 or not (math.isfinite(base_lr) and base_lr > 0):
        raise BrainbenchError(
            f"training needs epochs >= 1, batch size >= 1 and a finite lr > 0; got {epochs}, {batch_size}, "
            f"{base_lr}"
        )
    checkpoint_every = settings.checkpoint_every if settings.checkpoint_every is not None else defaults.checkpoint_every
    if checkpoint_every < 1:
        raise BrainbenchError(f"checkpoint_every must be >= 1 epoch, got {checkpoint_every}")
    return Recipe(
        epochs=epochs,
        batch_size=batch_size,
        base_lr=base_lr,
        lr=scaled_lr(base_lr, batch_size, defaults.lr_reference_batch),
        weight_decay=defaults.weight_decay,
        schedule=defaults.schedule,
        warmup_epochs=defaults.warmup_epochs,
        warmup_start_lr=defaults.warmup_start_lr,
        min_lr=defaults.min_lr,
        grad_clip=defaults.grad_clip,
        seed=settings.seed,
        early_stopping=settings.early_stopping,
        val_every=max(1, settings.val_every),
        drop_last=defaults.drop_last,
        checkpoint_every=checkpoint_every,
        lr_reference_batch=defaults.lr_reference_batch,
    )


# ---------------------------------------------------------------------------------------- optimizer


def trainable_modules(model: torch.nn.Module, objective: Objective) -> dict[str, torch.nn.Module]:
    """The model, plus the objective when it has parameters of its own (e.g. a learned temperature)."""
    modules = {"model": model}
    if isinstance(objective, torch.nn.Module):
        modules["objective"] = objective
    return modules


def parameter_groups(
    encoder: TorchEncoder, modules: dict[str, torch.nn.Module], weight_decay: float
) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights, and what ``encoder.no_weight_decay`` exempts."""
    decayed, exempt = [], []
    for prefix, module in modules.items():
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            qualified = name if prefix == "model" else f"{prefix}.{name}"
            (exempt if encoder.no_weight_decay(qualified, param) else decayed).append(param)
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(
    groups: list[dict[str, Any]], lr: float, device: torch.device, master_weights: bool = False,
    optimizer: str = "adamw",
) -> torch.optim.Optimizer:
    """AdamW: fused (one kernel per step) on CUDA, foreach on the CPU; or, with ``master_weights``, the
    bf16-weights optimizer, which casts the parameters to bf16 and keeps fp32 masters (build it while
    the model is still fp32); or a torchao AdamW with low-precision states (``optimizer``, see
    :mod:`brainbench.low_precision_adamw`), which casts the parameters to its weight dtype first."""
    if optimizer not in OPTIMIZERS:
        raise BrainbenchError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer != "adamw":
        if master_weights:
            raise BrainbenchError(
                f"optimizer {optimizer!r} keeps its own weight precision; use it without precision bf16-master"
            )
        dtype = parameter_dtype(optimizer)
        if dtype is not None:
            cast_parameters((p for group in groups for p in group["params"]), dtype)
        return build_low_precision_adamw(optimizer, groups, lr)
    if master_weights:
        return MasterWeightAdamW(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda" or None)


def should_compile(setting: str, device: torch.device, encoder: TorchEncoder) -> bool:
    """"on"/"off" as said; "auto" compiles on CUDA when the encoder asks (CPU compiles take minutes)."""
    if setting not in COMPILE_MODES:
        raise BrainbenchError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {setting!r}")
    if setting == "auto":
        return device.type == "cuda" and encoder.compile_by_default()
    return setting == "on"


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ---------------------------------------------------------------------------------- fitted encoder


class TorchFittedEncoder(FittedEncoder):
    """A trained torch encoder: predicts with ``encoder.embed`` in eval mode."""

    def __init__(
        self,
        encoder: TorchEncoder,
        model: torch.nn.Module,
        n_voxels: int,
        target_shape: Shape,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        history: list[dict[str, float]] | None = None,
    ) -> None:
        self.encoder = encoder
        self.model = model
        self.n_voxels = n_voxels
        self.target_shape = tuple(target_shape)
        self.device = device
        self.amp_dtype = amp_dtype
        self.history = list(history or [])
        self.recipe: dict[str, Any] = {}
        self.n_parameters = sum(p.numel() for p in model.parameters())

    def predict(self, voxels: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if voxels.ndim != 2 or voxels.shape[1] != self.n_voxels:
            raise DataError(
                f"voxels to predict from have shape {tuple(voxels.shape)}; expected (n, {self.n_voxels})"
            )
        out = np.empty((voxels.shape[0], *self.target_shape), dtype=np.float32)
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            for start in range(0, voxels.shape[0], batch_size):
                rows = torch.from_numpy(np.asarray(voxels[start : start + batch_size], dtype=np.float32))
                embedded = self.encoder.embed(self.model, rows.to(self.device))
                out[start : start + len(rows)] = (
                    embedded.float().reshape(len(rows), *self.target_shape).cpu().numpy()
                )
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            **model_metadata(self.encoder.name, self.encoder.params(), self.n_voxels, self.target_shape),
            "n_parameters": self.n_parameters,
            "history": self.history,
        }

    def save(self, path: Path) -> Path:
        """Safetensors weights with metadata; an existing folder gets ``model.safetensors`` inside it."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_NAME
        return save_model_file(path, self.model.state_dict(), self.metadata())

    @classmethod
    def load(
        cls, path: Path, *, encoder: TorchEncoder | None = None, n_voxels: int | None = None,
        target_shape: Shape | None = None, device: str = "auto", precision: str = "auto",
    ) -> TorchFittedEncoder:
        """:func:`load_fitted_encoder` behind FittedEncoder's one ``load`` signature (the encoder is needed:
        it builds the module the weights go into)."""
        if encoder is None:
            raise BrainbenchError(f"{path}: a torch model is loaded into the module its encoder builds; pass encoder=")
        fitted = load_fitted_encoder(encoder, path, device=device, precision=precision)
        if (n_voxels is not None and fitted.n_voxels != n_voxels) or (
            target_shape is not None and fitted.target_shape != tuple(target_shape)
        ):
            raise CheckpointMismatchError(
                f"model file {path} maps {fitted.n_voxels} voxels to {fitted.target_shape}, not {n_voxels} to "
                f"{tuple(target_shape or ())}"
            )
        return fitted


def load_fitted_encoder(
    encoder: TorchEncoder, path: Path, device: str = "auto", precision: str = "auto"
) -> TorchFittedEncoder:
    """Rebuild ``encoder``'s model from a file written by :meth:`TorchFittedEncoder.save`."""
    state, metadata = load_model_file(Path(path))
    if metadata.get("encoder") != encoder.name:
        raise CheckpointMismatchError(
            f"model file {path} holds encoder {metadata.get('encoder')!r}, not {encoder.name!r}"
        )
    n_voxels, target_shape = int(metadata["n_voxels"]), tuple(metadata["target_shape"])
    torch_device = resolve_device(device)
    model = encoder.build(n_voxels, target_shape)
    model.load_state_dict(state)
    model.to(torch_device)
    return TorchFittedEncoder(
        encoder,
        model,
        n_voxels,
        target_shape,
        torch_device,
        resolve_precision(precision, torch_device),
        metadata.get("history", []),
    )


# --------------------------------------------------------------------------------------- validation


@contextlib.contextmanager
def rng_untouched() -> Iterator[None]:
    """Run a block without moving any global RNG, so validating never changes the training trajectory."""
    states = capture_rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)


def validate(
    encoder: TorchEncoder,
    model: torch.nn.Module,
    objective: Objective,
    source: BatchSource,
    amp_dtype: torch.dtype | None,
    progress: float,
) -> dict[str, float]:
    """Validation loss (sample-weighted mean of the objective) and n-way retrieval top-1 (cosine).

    A prediction counts as a hit when its own target scores at least as high as every other validation
    target (so repeats of one stimulus, whose targets are identical, do not count against it).
    """
    modules = trainable_modules(model, objective)
    for module in modules.values():
        module.eval()
    loss_sum = torch.zeros((), device=source.device)
    predictions, targets = [], []
    with rng_untouched(), torch.no_grad(), autocast(source.device, amp_dtype):
        for voxels, target in source.batches(0):
            loss_sum += objective(model, voxels, target, progress).float() * len(voxels)
            predictions.append(F.normalize(encoder.embed(model, voxels).float().flatten(1), dim=1))
            targets.append(F.normalize(target.float().flatten(1), dim=1))
    predicted, truth = torch.cat(predictions), torch.cat(targets)
    hits, nce_sum = 0, 0.0
    for start in range(0, len(predicted), SIMILARITY_CHUNK):
        scores = predicted[start : start + SIMILARITY_CHUNK] @ truth.T
        own = scores.diagonal(offset=start)
        hits += int((own >= scores.max(dim=1).values).sum())
        nce_sum += float((torch.logsumexp(scores / SELECTION_TEMPERATURE, dim=1) - own / SELECTION_TEMPERATURE).sum())
    return {
        "val_loss": float(loss_sum) / source.n_samples,
        "val_top1": hits / source.n_samples,
        SELECTION_METRIC: nce_sum / source.n_samples,
    }


# ------------------------------------------------------------------------------------- training run


@dataclass
class BestState:
    """The best epoch so far by the selection criterion (lower is better)."""

    epoch: int = 0
    score: float = math.inf

    def as_payload(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "score": self.score}


def _check_fit_data(data: FitData) -> None:
    if data.voxels.ndim != 2 or data.n_fit == 0:
        raise DataError(
            f"FitData.voxels has shape {tuple(data.voxels.shape)} with {data.n_validation} validation rows; "
            "expected (n_trials, n_voxels) with at least one training row"
        )


class _Run:
    """State of one training run; split from :func:`train_torch_encoder` so each step reads plainly."""

    def __init__(
        self, encoder: TorchEncoder, data: FitData, settings: TrainSettings, reporter: Reporter
    ) -> None:
        _check_fit_data(data)
        self.encoder, self.settings, self.reporter = encoder, settings, reporter
        self.recipe = resolve_recipe(encoder, settings)
        self.device = resolve_device(settings.device)
        self.amp_dtype = resolve_precision(settings.precision, self.device)
        self.n_voxels, self.target_shape = data.n_voxels, data.target_shape

        seed_everything(settings.seed)
        self.model = encoder.build(self.n_voxels, self.target_shape).to(self.device)
        self.compiled = should_compile(settings.compile, self.device, encoder)
        if self.compiled:  # in place: state dicts, checkpoints and the saved model keep their keys
            encoder.compile_model(self.model)
        self.objective = encoder.objective(self.target_shape)
        if isinstance(self.objective, EpochAware):  # epoch-indexed objectives (MindEye: BiMixCo, then SoftCLIP)
            self.objective.set_epochs(self.recipe.epochs)
        self.modules = trainable_modules(self.model, self.objective)
        for module in self.modules.values():
            module.to(self.device)
        groups = parameter_groups(encoder, self.modules, self.recipe.weight_decay)
        self.parameters = [p for group in groups for p in group["params"]]
        self.master_weights = uses_master_weights(settings.precision)
        self.optimizer_name = settings.optimizer
        self.optimizer = build_optimizer(groups, self.recipe.lr, self.device, self.master_weights, settings.optimizer)
        if parameter_dtype(settings.optimizer) is not None:
            self.amp_dtype = parameter_dtype(settings.optimizer)  # bf16 weights need bf16 autocast, CPU too

        # targets are stored in the compute dtype under bf16: half the memory, and matmuls cast them anyway
        target_dtype = self.amp_dtype or torch.float32
        self.train_source = make_batch_source(
            data.fit_voxels, data.fit_targets, self.recipe.batch_size, self.device, settings.seed,
            drop_last=self.recipe.drop_last, target_dtype=target_dtype, repeat_groups=data.fit_groups,
        )
        self.val_source = (
            make_batch_source(
                data.val_voxels, data.val_targets, self.recipe.batch_size, self.device, settings.seed,
                shuffle=False, drop_last=False, target_dtype=target_dtype,
            )
            if data.n_validation
            else None
        )
        self.steps_per_epoch = self.train_source.steps_per_epoch
        self.total_steps = self.recipe.epochs * self.steps_per_epoch
        self.schedule: LearningRateSchedule = build_schedule(
            encoder.training_defaults(), self.recipe.lr, self.recipe.epochs, self.steps_per_epoch
        )
        self.metadata = model_metadata(encoder.name, encoder.params(), self.n_voxels, self.target_shape)

        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.started = time.perf_counter()
        self.seconds_before = 0.0  # training time recorded in the checkpoint a run resumed from
        self.resumed_from: int | None = None
        self.history: list[dict[str, float]] = []
        self.best = BestState()
        self.finished = False
        self.expectation: Expectation | None = None

    # ---------------------------------------------------------------------------- checkpoints

    @property
    def checkpoint_path(self) -> Path | None:
        folder = self.settings.checkpoint_dir
        return Path(folder) / CHECKPOINT_NAME if folder else None

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        payload = {
            "metadata": self.metadata,
            "recipe": asdict(self.recipe),
            "precision": self.settings.precision,
            "optimizer_setting": self.optimizer_name,
            "epoch": self.epoch,
            "finished": self.finished,
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.step},
            "rng": capture_rng_states(),
            "history": self.history,
            "best": self.best.as_payload(),
            "train_seconds": self.train_seconds(),
        }
        atomic_torch_save(payload, self.checkpoint_path)

    def resume(self) -> None:
        path = self.checkpoint_path
        if path is None or not self.settings.resume or not path.is_file():
            return
        payload = load_checkpoint(path, self.n_voxels, self.target_shape)
        self._check_same_run(payload, path)
        for name, module in self.modules.items():
            module.load_state_dict(payload["modules"][name])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["scheduler"]["step"])
        self.epoch = int(payload["epoch"])
        self.finished = bool(payload["finished"])
        self.history = [dict(entry) for entry in payload["history"]]
        best = payload["best"]
        self.best = BestState(int(best["epoch"]), float(best["score"]))
        restore_rng_states(payload["rng"])
        self.seconds_before = float(payload.get("train_seconds", 0.0))
        self.resumed_from = self.epoch
        self.reporter.info(f"resumed from {path} after epoch {self.epoch} of {self.recipe.epochs}")
        # the new run records the whole history, not only the epochs trained after the resume
        for entry in self.history:
            self.reporter.epoch_end(int(entry["epoch"]), {k: v for k, v in entry.items() if k != "epoch"})

    def train_seconds(self) -> float:
        """Training time so far, the time before a resume included."""
        return self.seconds_before + (time.perf_counter() - self.started)

    def _check_same_run(self, payload: dict[str, Any], path: Path) -> None:
        """A checkpoint of another encoder, option set or recipe would silently train something else."""
        saved, current = payload["metadata"], self.metadata
        differences = [
            f"{key}: checkpoint has {saved.get(key)!r}, this run has {current[key]!r}"
            for key in ("encoder", "encoder_params")
            if saved.get(key) != current[key]
        ]
        # bf16 master-weight state and plain AdamW state do not load into each other
        saved_master = uses_master_weights(payload.get("precision", "auto"))
        if saved_master != self.master_weights:
            differences.append(
                f"precision: checkpoint has {payload.get('precision')!r}, this run has {self.settings.precision!r}"
            )
        saved_optimizer = payload.get("optimizer_setting", "adamw")
        if saved_optimizer != self.optimizer_name:  # their states do not load into each other
            differences.append(f"optimizer: checkpoint has {saved_optimizer!r}, this run has {self.optimizer_name!r}")
        recipe = asdict(self.recipe)
        differences += [
            f"train.{key}: checkpoint has {payload['recipe'].get(key)!r}, this run has {value!r}"
            for key, value in recipe.items()
            if payload["recipe"].get(key) != value
        ]
        if differences:
            raise CheckpointMismatchError(
                f"checkpoint {path} belongs to a different run ({'; '.join(differences)}); "
                "use another checkpoint folder or turn resume off"
            )

    # -------------------------------------------------------------------------------- training

    def train_epoch(self, progress_bar: Any) -> dict[str, float]:
        for module in self.modules.values():
            module.train()
        loss_sum = torch.zeros((), device=self.device)  # summed on device: no host sync per step
        lr = self.schedule(self.step)
        for voxels, targets in self.train_source.batches(self.epoch):
            lr, beta1 = self.schedule(self.step), self.schedule.momentum(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr  # a float: the low-precision AdamWs copy it into their own device tensor
                if beta1 is not None:  # one-cycle's cycled momentum (torch's OneCycleLR sets beta1 so)
                    group["betas"] = (beta1, group["betas"][1])
            with autocast(self.device, self.amp_dtype):
                loss = self.objective(self.model, voxels, targets, self.step / self.total_steps)
            loss.backward()
            if self.recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.recipe.grad_clip, foreach=True)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()
            self.step += 1
            progress_bar.advance(1)
            if self.expectation is not None:
                self.expectation.step_done(self.step)
        train_loss = float(loss_sum) / self.steps_per_epoch
        if not math.isfinite(train_loss):
            raise BrainbenchError(
                f"{self.encoder.name}: training loss became {train_loss} in epoch {self.epoch + 1}; "
                "try a lower learning rate or fp32 precision"
            )
        return {"train_loss": train_loss, "lr": lr}

    def should_validate(self) -> bool:
        if self.val_source is None:
            return False
        return self.epoch % self.recipe.val_every == 0 or self.epoch == self.recipe.epochs

    def update_best(self, metrics: dict[str, float]) -> None:
        """Track the best epoch by the fixed criterion; stop once ``early_stopping`` epochs bring no better one."""
        if SELECTION_METRIC not in metrics:
            return
        if metrics[SELECTION_METRIC] < self.best.score:
            self.best = BestState(self.epoch, metrics[SELECTION_METRIC])
        elif self.recipe.early_stopping and self.epoch - self.best.epoch >= self.recipe.early_stopping:
            self.finished = True
            self.reporter.info(
                f"early stopping after epoch {self.epoch}: no better {SELECTION_METRIC} since epoch "
                f"{self.best.epoch}"
            )

    def precision_label(self) -> str:
        if self.master_weights:
            return "bf16 weights with fp32 master weights"
        if parameter_dtype(self.optimizer_name) is not None:
            return "bf16 weights (stochastic rounding), bf16 autocast"
        return "bf16 autocast" if self.amp_dtype else "fp32"

    def resolved(self) -> dict[str, Any]:
        """The recipe actually used, for the run's records (params ``recipe.<key>``)."""
        return {
            "epochs": self.recipe.epochs,
            "epochs_trained": self.epoch,
            "batch_size": self.recipe.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "drop_last": self.recipe.drop_last,
            "base_lr": self.recipe.base_lr,
            "lr": self.recipe.lr,
            "lr_batch_scaling": (
                f"linear, x batch / {self.recipe.lr_reference_batch}" if self.recipe.lr_reference_batch else "none"
            ),
            "schedule": self.recipe.schedule,
            "schedule_stepped": "per epoch" if self.recipe.schedule == "timm-cosine" else "per step",
            "warmup_epochs": self.recipe.warmup_epochs,
            "warmup_start_lr": self.schedule.warmup_start_lr,  # the schedule's own (one-cycle: lr / div_factor)
            "min_lr": self.schedule.min_lr,
            **self.schedule.record(),
            "weight_decay": self.recipe.weight_decay,
            "grad_clip": self.recipe.grad_clip,
            "optimizer": describe_optimizer(self.optimizer_name, self.master_weights),
            "optimizer_setting": self.optimizer_name,
            "precision": self.precision_label(),
            "device": str(self.device),
            "compiled": self.compiled,
            "checkpoint_every": self.recipe.checkpoint_every,
            "train_rows": self.train_source.n_samples,
            "resumed_from_epoch": self.resumed_from,
            "train_seconds_before_resume": round(self.seconds_before, 3),
            "sampling": "one repeat per step" if self.train_source.repeat_groups is not None else "single trials",
            "seed": self.recipe.seed,
        }

    def run(self) -> TorchFittedEncoder:
        self.resume()
        self.reporter.info(
            f"training {self.encoder.name} on {self.device} "
            f"({self.precision_label()}{', torch.compile' if self.compiled else ''}), "
            f"{DATA_PATHS[self.train_source.mode]}, "
            f"{self.recipe.epochs} epochs x {self.steps_per_epoch} steps of {self.recipe.batch_size}"
        )
        with self.reporter.progress(f"training {self.encoder.name}", self.total_steps) as bar:
            if self.step:
                bar.advance(self.step)
            if not self.finished and self.epoch < self.recipe.epochs:
                self.expectation = Expectation(self, self.step)
            while not self.finished and self.epoch < self.recipe.epochs:
                metrics = self.train_epoch(bar)
                self.epoch += 1
                if hasattr(bar, "update"):  # the Reporter protocol asks only for advance()
                    bar.update(epoch=f"{self.epoch}/{self.recipe.epochs}", loss=metrics["train_loss"])
                if self.should_validate():
                    metrics.update(
                        validate(
                            self.encoder, self.model, self.objective, self.val_source, self.amp_dtype,
                            self.step / self.total_steps,
                        )
                    )
                self.history.append({"epoch": float(self.epoch), **metrics})
                self.update_best(metrics)
                self.finished = self.finished or self.epoch == self.recipe.epochs
                # Big models (MindEye: ~11 GB of state) checkpoint less often; the last epoch always.
                if self.finished or self.epoch % self.recipe.checkpoint_every == 0:
                    self.save_checkpoint()
                self.reporter.epoch_end(self.epoch, metrics)
        fitted = TorchFittedEncoder(
            self.encoder, self.model, self.n_voxels, self.target_shape, self.device, self.amp_dtype,
            self.history,
        )
        fitted.recipe = self.resolved()
        if self.settings.checkpoint_dir:
            fitted.save(Path(self.settings.checkpoint_dir) / MODEL_NAME)
        return fitted


class Expectation:
    """Says, once the first steps are timed, how long the whole training should take: the pace of the
    second step (the first one also pays for warm-up), or of the first when there is only one."""

    def __init__(self, run: _Run, first_step: int) -> None:
        self.run, self.first_step = run, first_step
        self.remaining = run.total_steps - first_step
        self.marks = [time.perf_counter()]
        self.said = False

    def step_done(self, step: int) -> None:
        if self.said:
            return
        synchronize(self.run.device)  # twice per run: a GPU's queued work is timed, not just its launch
        self.marks.append(time.perf_counter())
        done = step - self.first_step
        if done < min(2, self.remaining):
            return
        self.said = True
        per_step = self.marks[-1] - self.marks[-2]
        expected = (self.marks[-1] - self.marks[0]) + per_step * (self.remaining - done)
        recipe = self.run.recipe
        self.run.reporter.info(
            f"expected ~{duration(expected)} of training: {recipe.epochs - self.run.epoch} epochs x "
            f"{self.run.steps_per_epoch} steps at {per_step * 1000:.0f} ms a step (validation not counted); "
            "each epoch's line updates the time left"
        )


#: Sub-folder of the checkpoint folder for the early-stopping selection run.
SELECTION_DIR = "selection"


class _PrefixedReporter:
    """The selection run's epoch metrics under their own names, apart from the final run's."""

    def __init__(self, reporter: Reporter, prefix: str) -> None:
        self.reporter, self.prefix = reporter, prefix

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.reporter.epoch_end(epoch, {f"{self.prefix}{k}": v for k, v in metrics.items()})

    def progress(self, description: str, total: int | None) -> Any:
        return self.reporter.progress(f"{description} (selection)", total)

    def info(self, message: str) -> None:
        self.reporter.info(message)


def train_torch_encoder(
    encoder: TorchEncoder, data: FitData, settings: TrainSettings, reporter: Reporter
) -> TorchFittedEncoder:
    """Train ``encoder`` on ALL rows of ``data`` and return the fitted model.

    With ``settings.early_stopping`` and validation rows, a selection run first trains on the other rows
    and picks the epoch count by :data:`SELECTION_METRIC` on the validation rows; the model returned is then
    trained on all rows for that many epochs. With ``settings.checkpoint_dir`` set, ``last.pt`` is written
    there every ``checkpoint_every`` epochs and ``model.safetensors`` at the end; with ``settings.resume``
    a run continues from ``last.pt``.
    """
    _check_fit_data(data)
    if not settings.early_stopping:
        return _Run(encoder, data.without_validation(), settings, reporter).run()
    if not data.n_validation:
        raise BrainbenchError("early stopping needs validation images; set a validation fraction above 0")
    folder = settings.checkpoint_dir
    selection = _Run(
        encoder, data, replace(settings, checkpoint_dir=Path(folder) / SELECTION_DIR if folder else None),
        _PrefixedReporter(reporter, "selection_"),
    )
    selection.run()
    chosen = max(1, selection.best.epoch)
    reporter.info(
        f"early stopping chose {chosen} epoch(s) by {SELECTION_METRIC} on {data.n_validation} validation rows "
        f"(best {selection.best.score:.4f}); training again on all {data.n_rows} rows for {chosen} epoch(s)"
    )
    fitted = _Run(encoder, data.without_validation(), replace(settings, epochs=chosen, early_stopping=None),
                  reporter).run()
    fitted.recipe.update(
        {
            "early_stopping_patience": settings.early_stopping,
            "selection_metric": f"{SELECTION_METRIC} (InfoNCE at temperature {SELECTION_TEMPERATURE})",
            "selection_epochs_run": selection.epoch,
            "selected_epochs": chosen,
            "selection_rows": data.n_fit,
            "validation_rows": data.n_validation,
        }
    )
    fitted.history = [{**h, "phase": 0.0} for h in selection.history] + [
        {**h, "phase": 1.0} for h in fitted.history
    ]
    return fitted


def recipe_params(encoder: TorchEncoder, settings: TrainSettings) -> dict[str, Any]:
    """The training plan a run will follow, as flat params for the run's records."""
    return resolve_recipe(encoder, settings).as_params()
