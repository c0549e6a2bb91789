"""RunConfig: one cell of an experiment, fully resolved; its hash is the cell's stable key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from brainbench.options import Option, Options

REPEAT_MODES = ("average-voxels", "average-predictions")
BUDGETS = ("auto", "quick", "reference")
COMPILE_MODES = ("auto", "on", "off")
#: The trainer's optimizer settings (brainbench.low_precision_adamw.OPTIMIZERS, kept here free of torch).
OPTIMIZERS = ("adamw", "adamw8bit", "adamw8bit-bf16", "adamw-bf16-states")
#: Seeds every random generator a run uses takes as given: numpy's legacy RandomState (and so most of the
#: ecosystem) takes 0..2**32-1; a larger seed would be cut down (2**32 + 5 aliasing seed 5) or refused mid-run.
SEED_MAX = 2**32 - 1
#: Bounds of a cell's size-like settings: far past any real recipe (Lite-Mind's reference is 1,500 epochs at
#: batch 600), close enough that a typo (an extra zero block) is refused before anything runs.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 2**20
MAX_SUBJECT = 10_000
#: "bf16-master": bf16 autocast with the weights themselves in bf16 and fp32 master copies in the optimizer.
PRECISIONS = ("auto", "fp32", "bf16", "bf16-master")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
#: The settings of a cell a user sets (flags of ``brainbench run``, keys of a matrix spec), declared with the
#: same machinery as plugin options (brainbench.options): type, range and accepted values in one place.
RUN_SETTINGS = Options(
    Option("encoder", str, help="encoder name"),
    Option("task", str, help="task name"),
    Option("dataset", str, None, nullable=True, help="dataset name"),
    Option("target", str, None, nullable=True, help="target name"),
    Option("subject", int, 1, minimum=1, maximum=MAX_SUBJECT, help="subject number"),
    Option("seed", int, 0, minimum=0, maximum=SEED_MAX, help="random seed"),
    Option("data_path", str, None, nullable=True, help="folder of the dataset's files"),
    Option("epochs", int, None, minimum=1, maximum=MAX_EPOCHS, nullable=True, help="training epochs"),
    Option("batch_size", int, None, minimum=1, maximum=MAX_BATCH_SIZE, nullable=True, help="batch size"),
    Option("lr", float, None, above=0, nullable=True, help="learning rate"),
    Option("device", str, "auto", help="auto | cpu | cuda | cuda:N | mps", pattern=DEVICE_PATTERN,
           spelled="auto, cpu, cuda, cuda:N, mps"),
    Option("precision", str, "auto", choices=PRECISIONS, help="auto | fp32 | bf16 | bf16-master"),
    Option("compile", str, "auto", choices=COMPILE_MODES, help="torch.compile in training"),
    Option("repeats", str, "average-voxels", choices=REPEAT_MODES, help="test repeats"),
    Option("val_fraction", float, 0.1, minimum=0, below=1, help="share of training images for validation"),
    Option("early_stopping", int, None, minimum=1, maximum=MAX_EPOCHS, nullable=True, help="patience (epochs)"),
    Option("checkpoint_every", int, None, minimum=1, maximum=MAX_EPOCHS, nullable=True,
           help="epochs between checkpoints"),
    Option("log_model", bool, False, help="log the fitted encoder as an MLflow model"),
    Option("budget", str, "auto", choices=BUDGETS, help="quick or reference recipe"),
    Option("optimizer", str, "adamw", choices=OPTIMIZERS, help="AdamW, or AdamW with low-precision states"),
)
#: How a matrix is launched (``brainbench matrix run``): not part of any cell.
MAX_WORKERS = 1024
LAUNCH_SETTINGS = Options(
    Option("workers", int, None, minimum=1, maximum=MAX_WORKERS, nullable=True, help="worker processes / GPUs"),
    Option("cpus_per_cell", float, 1.0, above=0, maximum=MAX_WORKERS, help="ray: CPUs each cell asks for"),
)
OPTION_FIELDS = ("encoder_options", "task_options", "dataset_options", "target_options")
#: What each declared value must already be (no coercion: a cell's key hashes the values as given).
_EXACT_TYPES: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def setting_problems(values: dict[str, Any], name_of: Any = None, declared: Options = RUN_SETTINGS) -> list[str]:
    """What is wrong with a cell's settings, one line each naming the setting as the user wrote it
    (``name_of(field)``: e.g. ``--seed`` on the command line; the field name by default). Values are checked,
    never converted: text "3" is not a seed."""
    problems = []
    for field_name, value in values.items():
        option = declared.get(field_name)
        if option is None:
            if field_name in OPTION_FIELDS and not isinstance(value, dict):
                problems.append(f"{field_name}={value!r}: expected a table of options")
            continue
        shown = name_of(field_name) if name_of else field_name
        if value is None and option.nullable:
            continue
        allowed = _EXACT_TYPES[option.type]
        if not isinstance(value, allowed) or (option.type is not bool and isinstance(value, bool)):
            problems.append(f"{shown}={value!r}: expected {option.accepted()}")
            continue
        try:
            option.coerce(value)
        except ValueError:
            # on the command line an unset flag is simply left out: no "(or none)" there
            accepted = (replace(option, nullable=False) if name_of else option).accepted()
            problems.append(f"{shown}={value!r}: must be {accepted}")
    return problems
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
    log_model: bool = False  # also log the fitted encoder as an MLflow model (see brainbench.records.model)
    budget: str = "auto"  # auto: the encoder's quick recipe on demo-scale simulated data, else its reference
    encoder_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    target_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = setting_problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:  # every setting checked against its declaration in RUN_SETTINGS, nowhere else
            raise ValueError("; ".join(problems))

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
