"""RunConfig: one cell of an experiment, fully resolved; its hash is the cell's stable key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

REPEAT_MODES = ("average-voxels", "average-predictions")
BUDGETS = ("auto", "quick", "reference")
COMPILE_MODES = ("auto", "on", "off")
#: The trainer's optimizer settings (brainbench.low_precision_adamw.OPTIMIZERS, kept here free of torch).
OPTIMIZERS = ("adamw", "adamw8bit", "adamw8bit-bf16", "adamw-bf16-states")
#: Settings added after cell keys were first recorded: left out of the key while at these defaults, so
#: cells logged by earlier versions keep their keys (and ``--resume`` still finds them).
KEY_OMITTED_DEFAULTS: dict[str, Any] = {"compile": "auto", "optimizer": "adamw"}
#: Settings that change how a cell runs, not what it computes: never part of the key (so a rerun with another
#: checkpoint interval, or one that also logs its model, resumes the same cell).
KEY_IGNORED = frozenset({"checkpoint_every", "log_model"})


@dataclass(frozen=True)
class RunConfig:
    encoder: str
    task: str
    dataset: str | None = None  # None: the task's default dataset
    target: str | None = None  # None: the task's, else the dataset's default target
    subject: int = 1
    seed: int = 0
    data_path: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: str = "auto"  # auto | on | off: torch.compile of the model in training
    optimizer: str = "adamw"  # adamw | adamw8bit | adamw8bit-bf16 | adamw-bf16-states (brainbench.low_precision_adamw)
    repeats: str = "average-voxels"
    val_fraction: float = 0.1
    early_stopping: int | None = None  # patience in epochs: chooses the epoch count, then refits on all rows
    checkpoint_every: int | None = None  # epochs between checkpoints; None: the encoder's own interval
    log_model: bool = False  # also log the fitted encoder as an MLflow model (see brainbench.mlflow_model)
    budget: str = "auto"  # auto: the encoder's quick recipe on demo-scale simulated data, else its reference
    encoder_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    target_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.repeats not in REPEAT_MODES:
            raise ValueError(f"repeats must be one of {', '.join(REPEAT_MODES)}, got {self.repeats!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ValueError(f"early_stopping (patience in epochs) must be >= 1, got {self.early_stopping}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {self.checkpoint_every}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown run setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def with_changes(self, **changes: Any) -> RunConfig:
        return replace(self, **changes)

    @property
    def key(self) -> str:
        """Stable 16-hex-digit hash of the resolved config (the cell key used for resume)."""
        settings = {
            name: value
            for name, value in self.to_dict().items()
            if KEY_OMITTED_DEFAULTS.get(name, object()) != value and name not in KEY_IGNORED
        }
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.encoder}/{self.task}/sub{self.subject}/seed{self.seed}"
