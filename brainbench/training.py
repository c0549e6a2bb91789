"""The one training loop every torch encoder uses.

AdamW with per-parameter weight decay, a step-wise learning-rate schedule, bf16 autocast on GPUs, gradient
clipping, validation on a split carved from the training data, early stopping, and checkpoints each epoch
that let a killed run resume and finish with exactly the weights of an uninterrupted one (on the CPU).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
from brainbench.devices import resolve_device, resolve_precision, seed_everything, uses_master_weights
from brainbench.errors import BrainbenchError, CheckpointMismatchError, DataError
from brainbench.interfaces import FitData, FittedEncoder, Reporter, Shape, TrainSettings
from brainbench.master_weights import MasterWeightAdamW
from brainbench.schedules import LearningRateSchedule, build_schedule, scaled_lr
from brainbench.staging import BatchSource, make_batch_source
from brainbench.torch_encoder import Objective, TorchEncoder

#: Rows of the validation similarity matrix computed at once (bounds memory for 257x768 targets).
SIMILARITY_CHUNK = 1024
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

    def as_params(self) -> dict[str, Any]:
        return {f"train.{key}": value for key, value in asdict(self).items()}


def resolve_recipe(encoder: TorchEncoder, settings: TrainSettings) -> Recipe:
    defaults = encoder.defaults
    epochs = settings.epochs if settings.epochs is not None else defaults.epochs
    batch_size = settings.batch_size if settings.batch_size is not None else defaults.batch_size
    base_lr = settings.lr if settings.lr is not None else defaults.lr
    if epochs < 1 or batch_size < 1 or base_lr <= 0:
        raise BrainbenchError(
            f"training needs epochs >= 1, batch size >= 1 and lr > 0; got {epochs}, {batch_size}, {base_lr}"
        )
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
    groups: list[dict[str, Any]], lr: float, device: torch.device, master_weights: bool = False
) -> torch.optim.Optimizer:
    """AdamW: fused (one kernel per step) on CUDA, foreach on the CPU; or, with ``master_weights``, the
    bf16-weights optimizer, which casts the parameters to bf16 and keeps fp32 masters (build it while
    the model is still fp32)."""
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
    hits = 0
    for start in range(0, len(predicted), SIMILARITY_CHUNK):
        scores = predicted[start : start + SIMILARITY_CHUNK] @ truth.T
        own = scores.diagonal(offset=start)
        hits += int((own >= scores.max(dim=1).values).sum())
    return {"val_loss": float(loss_sum) / source.n_samples, "val_top1": hits / source.n_samples}


# ------------------------------------------------------------------------------------- training run


@dataclass
class BestState:
    """The best validation so far; its weights are kept only when early stopping may need them."""

    epoch: int = 0
    val_loss: float = math.inf
    weights: dict[str, dict[str, torch.Tensor]] | None = None

    def as_payload(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val_loss": self.val_loss, "weights": self.weights}


def _cpu_copy(modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}
        for name, module in modules.items()
    }


def _check_fit_data(data: FitData) -> None:
    if data.train_voxels.ndim != 2 or data.train_voxels.shape[0] == 0:
        raise DataError(
            f"FitData.train_voxels has shape {tuple(data.train_voxels.shape)}; expected (n_trials > 0, n_voxels)"
        )
    n, n_voxels = data.train_voxels.shape
    if data.train_targets.shape[0] != n:
        raise DataError(f"FitData.train_targets has {data.train_targets.shape[0]} rows; expected {n}")
    if len(data.val_voxels) and tuple(data.val_voxels.shape[1:]) != (n_voxels,):
        raise DataError(
            f"FitData.val_voxels has shape {tuple(data.val_voxels.shape)}; expected (n, {n_voxels})"
        )
    if len(data.val_voxels) and tuple(data.val_targets.shape) != (len(data.val_voxels), *data.target_shape):
        raise DataError(
            f"FitData.val_targets has shape {tuple(data.val_targets.shape)}; "
            f"expected ({len(data.val_voxels)}, {', '.join(map(str, data.target_shape))})"
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
        self.modules = trainable_modules(self.model, self.objective)
        for module in self.modules.values():
            module.to(self.device)
        groups = parameter_groups(encoder, self.modules, self.recipe.weight_decay)
        self.parameters = [p for group in groups for p in group["params"]]
        self.master_weights = uses_master_weights(settings.precision)
        self.optimizer = build_optimizer(groups, self.recipe.lr, self.device, self.master_weights)

        # targets are stored in the compute dtype under bf16: half the memory, and matmuls cast them anyway
        target_dtype = self.amp_dtype or torch.float32
        self.train_source = make_batch_source(
            data.train_voxels, data.train_targets, self.recipe.batch_size, self.device, settings.seed,
            target_dtype=target_dtype,
        )
        self.val_source = (
            make_batch_source(
                data.val_voxels, data.val_targets, self.recipe.batch_size, self.device, settings.seed,
                shuffle=False, drop_last=False, target_dtype=target_dtype,
            )
            if len(data.val_voxels)
            else None
        )
        self.steps_per_epoch = self.train_source.steps_per_epoch
        self.total_steps = self.recipe.epochs * self.steps_per_epoch
        defaults = encoder.defaults
        self.schedule: LearningRateSchedule = build_schedule(
            defaults, self.recipe.lr, self.recipe.epochs, self.steps_per_epoch
        )
        self.metadata = model_metadata(encoder.name, encoder.params(), self.n_voxels, self.target_shape)

        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.history: list[dict[str, float]] = []
        self.best = BestState()
        self.finished = False

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
            "epoch": self.epoch,
            "finished": self.finished,
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.step},
            "rng": capture_rng_states(),
            "history": self.history,
            "best": self.best.as_payload(),
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
        self.best = BestState(int(best["epoch"]), float(best["val_loss"]), best["weights"])
        restore_rng_states(payload["rng"])
        self.reporter.info(f"resumed from {path} after epoch {self.epoch} of {self.recipe.epochs}")

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
            lr = self.schedule(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
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
        """Track the best validation loss; stop once ``early_stopping`` epochs pass without a better one."""
        if "val_loss" not in metrics:
            return
        if metrics["val_loss"] < self.best.val_loss:
            weights = _cpu_copy(self.modules) if self.recipe.early_stopping else None
            self.best = BestState(self.epoch, metrics["val_loss"], weights)
        elif self.recipe.early_stopping and self.epoch - self.best.epoch >= self.recipe.early_stopping:
            self.finished = True
            self.reporter.info(
                f"early stopping after epoch {self.epoch}: no better validation loss since epoch "
                f"{self.best.epoch}"
            )

    def restore_best(self) -> None:
        if self.recipe.early_stopping and self.best.weights is not None:
            for name, module in self.modules.items():
                module.load_state_dict(self.best.weights[name])
            self.reporter.info(f"restored the weights of epoch {self.best.epoch} (best validation loss)")

    def precision_label(self) -> str:
        if self.master_weights:
            return "bf16 weights with fp32 master weights"
        return "bf16 autocast" if self.amp_dtype else "fp32"

    def run(self) -> TorchFittedEncoder:
        self.resume()
        if self.recipe.early_stopping and self.val_source is None:
            self.reporter.info("early stopping needs validation data; none was given, so it is off")
        self.reporter.info(
            f"training {self.encoder.name} on {self.device} "
            f"({self.precision_label()}{', torch.compile' if self.compiled else ''}), "
            f"{DATA_PATHS[self.train_source.mode]}, "
            f"{self.recipe.epochs} epochs x {self.steps_per_epoch} steps of {self.recipe.batch_size}"
        )
        with self.reporter.progress(f"training {self.encoder.name}", self.total_steps) as bar:
            if self.step:
                bar.advance(self.step)
            while not self.finished and self.epoch < self.recipe.epochs:
                metrics = self.train_epoch(bar)
                self.epoch += 1
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
                # Big models (MindEye: ~11 GB of state) may checkpoint less often; the last epoch always.
                if self.finished or self.epoch % max(1, self.settings.checkpoint_every) == 0:
                    self.save_checkpoint()
                self.reporter.epoch_end(self.epoch, metrics)
        self.restore_best()
        fitted = TorchFittedEncoder(
            self.encoder, self.model, self.n_voxels, self.target_shape, self.device, self.amp_dtype,
            self.history,
        )
        if self.settings.checkpoint_dir:
            fitted.save(Path(self.settings.checkpoint_dir) / MODEL_NAME)
        return fitted


def train_torch_encoder(
    encoder: TorchEncoder, data: FitData, settings: TrainSettings, reporter: Reporter
) -> TorchFittedEncoder:
    """Train ``encoder`` on ``data`` (validating on ``data.val_*`` only) and return the fitted model.

    With ``settings.checkpoint_dir`` set, ``last.pt`` is written there after every epoch and
    ``model.safetensors`` at the end; with ``settings.resume`` a run continues from ``last.pt``.
    """
    return _Run(encoder, data, settings, reporter).run()


def recipe_params(encoder: TorchEncoder, settings: TrainSettings) -> dict[str, Any]:
    """The training plan a run will follow, as flat params for the run's records."""
    return resolve_recipe(encoder, settings).as_params()
