"""The four small interfaces every plugin implements: Dataset, Target, Encoder, Task.

Arrays crossing these interfaces are numpy, float32, samples first. Torch stays inside encoders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from brainbench.recipes import QuickRecipe  # defined in the recipes leaf; imported from here too

Shape = tuple[int, ...]


class Configurable:
    """What every plugin kind shares: options declared once (``declared_options``, a
    :class:`brainbench.options.Options`), validated once, read back as typed attributes (``self.options.k``).

    The registry builds a plugin with ``options=`` already parsed; built directly (tests, other code), its
    keywords are parsed here against the same declaration. A plugin without a declaration (``None``) keeps its
    keywords as a dict, unchecked (older third-party plugins).
    """

    name: ClassVar[str] = "plugin"
    declared_options: ClassVar[Any] = None
    options: Any

    def __init__(self, options: Any = None, **values: Any) -> None:
        from brainbench.options import accept

        self.options = accept(type(self).declared_options, str(self.name), options, values)

    def params(self) -> dict[str, Any]:
        """Every option in force, for the run's records."""
        as_dict = getattr(self.options, "as_dict", None)
        return as_dict() if as_dict is not None else dict(self.options)


@runtime_checkable
class ArrayLike(Protocol):
    """An array that may live on disk (h5py dataset) or in memory (numpy)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, index: Any) -> Any: ...


# --------------------------------------------------------------------------------------------- datasets


@dataclass
class Trials:
    """All trials of one subject in one split: rows of ``voxels`` pair with ``stimulus_ids``."""

    voxels: ArrayLike  # (n_trials, n_voxels); may be a lazy, row-indexable view of an HDF5 file
    stimulus_ids: np.ndarray  # (n_trials,) int64
    sessions: np.ndarray | None = None  # (n_trials,) int, when known
    #: True when training should take one repeat per step (step s of an epoch uses repeat s % R of each image
    #: in its batch, as MindEye1 trains) instead of shuffling single trials; the trial order within an image
    #: is its repeat order.
    one_repeat_per_step: bool = False

    def __post_init__(self) -> None:
        self.stimulus_ids = np.asarray(self.stimulus_ids, dtype=np.int64)
        if self.voxels.shape[0] != len(self.stimulus_ids):
            raise ValueError(
                f"{self.voxels.shape[0]} voxel rows but {len(self.stimulus_ids)} stimulus ids"
            )

    @property
    def n_trials(self) -> int:
        return int(self.voxels.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.voxels.shape[1])

    def load(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Materialise (some) rows as float32, in the order asked (:func:`brainbench.rows.read_rows`)."""
        if rows is None:
            return np.asarray(self.voxels[:], dtype=np.float32)
        from brainbench.rows import read_rows

        return read_rows(self.voxels, rows)

    def unique_stimuli(self) -> np.ndarray:
        return np.unique(self.stimulus_ids)

    def select(self, mask: np.ndarray) -> Trials:
        rows = np.flatnonzero(mask)
        sessions = None if self.sessions is None else self.sessions[rows]
        return Trials(self.load(rows), self.stimulus_ids[rows], sessions)


class Dataset(ABC):
    """Voxel responses of one or more subjects to identified stimuli."""

    name: str = "dataset"
    # A dataset is opened by a function or class registered for it, which declares its options
    # (brainbench.options.declares): one opener may return one of several Dataset classes (NSD's layouts).

    #: True for data written by the built-in simulator; runs on it are labelled synthetic.
    synthetic: bool = False
    #: Target used when neither the run nor the task names one.
    default_target: str = "synthetic-clip"
    #: The dataset's 257x768 token target, given to encoders whose reference trains on tokens (see
    #: ``Encoder.reference_target``) when the data are not demo-scale; None: the dataset has none.
    token_target: str | None = None
    #: True for simulator scales meant to run in seconds on a laptop: encoders use their quick recipe there.
    demo_scale: bool = False

    @abstractmethod
    def subjects(self) -> list[int]: ...

    @abstractmethod
    def n_voxels(self, subject: int) -> int: ...

    @abstractmethod
    def trials(self, subject: int, split: str) -> Trials:
        """Trials of ``split`` ("train", "test", or a dataset-specific split such as "imagery")."""

    def splits(self) -> list[str]:
        return ["train", "test"]

    def stored_embeddings(self, key: str) -> ArrayLike | None:
        """Precomputed embeddings stored with the data, indexed by stimulus id; None if absent.

        ``key``: :data:`brainbench.constants.EMBEDDING_POOLED` or :data:`~brainbench.constants.EMBEDDING_TOKENS`.
        """
        return None

    def stored_text_embeddings(self, texts: Sequence[str]) -> np.ndarray | None:
        """Precomputed text embeddings (e.g. class names) stored with the data; None if absent."""
        return None

    def images(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        """Stimulus images (n, 3, H, W) float32 in [0, 1], or None if the dataset has none."""
        return None

    def categories(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        """Integer category label per stimulus, or None if unknown."""
        return None

    def category_names(self) -> list[str] | None:
        return None

    def voxel_labels(self, subject: int) -> dict[str, Any] | None:
        """Region labels of the voxels ``trials`` returns: atlas name -> an object with ``values`` (n_voxels,)
        int (0 or below: no label) and ``labels`` {value: name}; None when the data hold none."""
        return None

    def all_stimulus_ids(self) -> np.ndarray:
        """Every stimulus id any subject sees in any split, sorted and unique (override when cheaper)."""
        found = [
            np.asarray(self.trials(subject, split).stimulus_ids, dtype=np.int64)
            for subject in self.subjects()
            for split in self.splits()
        ]
        return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)

    def cache_key(self) -> str | None:
        """What tells this dataset's files apart in caches kept across runs (target embeddings): by default
        the resolved ``root`` folder when the dataset has one, else None (the name alone)."""
        root = getattr(self, "root", None)
        return None if root is None else str(Path(root).expanduser().resolve())

    def file_details(self) -> list[dict[str, Any]] | None:
        """Per-file details ``brainbench data inspect`` prints (keys, shapes, counts); None: none."""
        return None

    def close(self) -> None:
        """Release open files; the harness calls it when done with the dataset. Default: nothing to do."""
        return None

    def describe(self) -> dict[str, Any]:
        """What a user sees in ``brainbench data inspect`` and what runs log as dataset params."""
        return {"name": self.name, "synthetic": self.synthetic, "subjects": self.subjects()}


# ---------------------------------------------------------------------------------------------- targets


class Target(Configurable, ABC):
    """The embedding space stimuli are mapped to, e.g. CLIP ViT-L/14 pooled 768-d or 257x768 tokens."""

    name: str = "target"  # type: ignore[misc]  # a target may name itself per instance
    shape: Shape = (768,)

    @abstractmethod
    def embed(self, dataset: Dataset, stimulus_ids: np.ndarray) -> np.ndarray:
        """Embeddings (n, *shape) float32 of the given stimuli (from a cache where one exists)."""

    def embed_text(self, texts: Sequence[str], dataset: Dataset | None = None) -> np.ndarray:
        """Embeddings (n, shape[-1]) of finished prompts, in the same space; one row per text, as given.

        ``texts`` are FINISHED prompts ("an image of a goldfish."), never bare class names to be templated:
        the caller (a task) applies its prompt templates once and averages as its protocol says; a target
        embeds each text exactly as it receives it, adding no template of its own.
        """
        raise NotImplementedError(f"target {self.name!r} cannot embed text")

    def check_ready(self, dataset: Dataset) -> None:
        """Called before any training or MLflow run: raise a BrainbenchError naming what this target needs
        for ``dataset`` that is missing (model weights, images, a cache) and how to get it. Default: nothing."""
        return None

    def cache_path(self, dataset: Dataset) -> Path | None:
        """The file this target keeps ``dataset``'s embeddings in (named when they turn out broken); None when
        it keeps no cache (embeddings stored with the data, or computed each time)."""
        return None

    def params(self) -> dict[str, Any]:
        return {"target": self.name, "target_shape": "x".join(map(str, self.shape))}


# --------------------------------------------------------------------------------------------- encoders


@dataclass
class TrainSettings:
    """What a run asks of training; None means "the encoder's default"."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16 | bf16-master (bf16 weights, fp32 masters in the optimizer)
    compile: str = "auto"  # auto (on a GPU when the encoder's fast path asks for it) | on | off
    optimizer: str = "adamw"  # adamw | adamw8bit | adamw8bit-bf16 | adamw-bf16-states (brainbench.low_precision_adamw)
    checkpoint_dir: Path | None = None
    checkpoint_every: int | None = None  # epochs between checkpoints; None: the encoder's (the last always)
    resume: bool = True
    early_stopping: int | None = None  # patience in epochs; selects the epoch count, then refits on all rows
    val_every: int = 1


@dataclass
class FitData:
    """An encoder's training data: every training trial, the last ``n_validation`` rows marked as validation.

    The one rule for every encoder: the model ``fit`` returns is fitted on ALL rows (``voxels``,
    ``targets``). The validation rows (whole images, carved from the TRAINING split, never the test set)
    may only be used to choose something (ridge: its penalty; a neural encoder with early stopping: the
    number of epochs); after choosing on them, the encoder refits on all rows with what it chose.
    ``fit_*`` and ``val_*`` are views of the same arrays (no copies).
    """

    voxels: np.ndarray  # (n, V) float32
    # (n, *target_shape) float32, always ONE type: a brainbench.arrays.RowIndexed view that holds each
    # stimulus' embedding once and repeats it per trial without copying (257x768 tokens at NSD scale would be
    # ~20 GB expanded). Index or slice its rows (numpy arrays come back), .astype() it, or np.asarray() it for
    # the whole array. An array given here is wrapped in one.
    targets: ArrayLike
    n_validation: int = 0
    #: (n_images, R) row numbers of each image's repeats when the data asks for one repeat per training step
    #: (MindEye1's training: step s of an epoch takes repeat s % R of every image in its batch); else None.
    repeat_groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = int(self.voxels.shape[0])
        if not hasattr(self.targets, "row_range"):  # encoders receive one documented type, whatever was given
            from brainbench.arrays import RowIndexed

            values = np.asarray(self.targets)
            self.targets = RowIndexed(values, np.arange(len(values)))
        if int(self.targets.shape[0]) != n:
            raise ValueError(f"FitData: {n} voxel rows but {self.targets.shape[0]} target rows")
        if not 0 <= self.n_validation <= n:
            raise ValueError(f"FitData: n_validation={self.n_validation} outside [0, {n}]")
        if self.repeat_groups is not None:
            groups = np.asarray(self.repeat_groups, dtype=np.int64)
            if groups.ndim != 2 or (groups.size and (groups.min() < 0 or groups.max() >= n)):
                raise ValueError(f"FitData: repeat_groups must be (n_images, repeats) row numbers below {n}")
            self.repeat_groups = groups

    @property
    def fit_groups(self) -> np.ndarray | None:
        """The repeat groups of the fit rows' images (an image's rows are all fit or all validation)."""
        if self.repeat_groups is None:
            return None
        return self.repeat_groups[self.repeat_groups[:, 0] < self.n_fit]

    @property
    def n_rows(self) -> int:
        return int(self.voxels.shape[0])

    @property
    def n_fit(self) -> int:
        """Rows a choice is fitted on before it is scored on the validation rows."""
        return self.n_rows - self.n_validation

    @property
    def fit_voxels(self) -> np.ndarray:
        return self.voxels[: self.n_fit]

    @property
    def fit_targets(self) -> ArrayLike:
        return self.targets.row_range(0, self.n_fit)  # a view of the same distinct values

    @property
    def val_voxels(self) -> np.ndarray:
        return self.voxels[self.n_fit :]

    @property
    def val_targets(self) -> ArrayLike:
        return self.targets.row_range(self.n_fit, self.n_rows)

    @property
    def n_voxels(self) -> int:
        return int(self.voxels.shape[1])

    @property
    def target_shape(self) -> Shape:
        return tuple(int(s) for s in self.targets.shape[1:])

    @classmethod
    def from_splits(
        cls, fit_voxels: Any, fit_targets: Any, val_voxels: Any = None, val_targets: Any = None
    ) -> FitData:
        """One FitData from separate fit and validation arrays (copied into one; validation rows last)."""
        if val_voxels is None or len(val_voxels) == 0:
            return cls(np.asarray(fit_voxels, dtype=np.float32), fit_targets, 0)
        voxels = np.concatenate([np.asarray(fit_voxels, dtype=np.float32), np.asarray(val_voxels, dtype=np.float32)])
        values = getattr(fit_targets, "values", None)
        if values is not None and getattr(val_targets, "values", None) is values:  # two views of one store
            targets: Any = type(fit_targets)(values, np.concatenate([fit_targets.index, val_targets.index]))
        else:
            targets = np.concatenate([np.asarray(fit_targets), np.asarray(val_targets)])
        return cls(voxels, targets, len(val_voxels))

    def without_validation(self) -> FitData:
        """The same rows with none marked as validation (what a refit trains on)."""
        return FitData(self.voxels, self.targets, 0, self.repeat_groups)


class Reporter(Protocol):
    """How encoders report progress; the CLI shows it, the tracker logs it."""

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def progress(self, description: str, total: int | None) -> Any:
        """A context manager whose ``advance(n=1)`` moves a progress bar (and, when it has one,
        ``update(**fields)`` shows fields beside it: the trainer names the epoch and loss)."""
        ...

    def info(self, message: str) -> None: ...


class FittedEncoder(ABC):
    """A trained encoder: predicts target embeddings from voxels, saves itself and loads back.

    Every fitted encoder sets ``n_voxels`` and ``target_shape`` (what ``--log-model`` writes into the model's
    signature) and implements ``save`` and the classmethod ``load``; the contract test
    (:func:`brainbench.testing.check_encoder`) runs save -> load -> predict on each.
    """

    #: Voxels per row ``predict`` takes.
    n_voxels: int
    #: The shape of one prediction, e.g. (768,) or (257, 768).
    target_shape: Shape
    n_parameters: int = 0
    history: list[dict[str, float]]
    #: What the fit actually used (epochs, lr schedule, ridge's chosen penalty, ...); the run logs it as
    #: params ``recipe.<key>``.
    recipe: Mapping[str, Any] = MappingProxyType({})  # an encoder sets its own dict per fitted model

    @abstractmethod
    def predict(self, voxels: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(n, V) float32 -> (n, *target_shape) float32."""

    @abstractmethod
    def save(self, path: Path) -> Path:
        """Write a safely loadable checkpoint (no pickled code); returns the file written."""

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        encoder: Encoder | None = None,
        n_voxels: int | None = None,
        target_shape: Shape | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> FittedEncoder:
        """The model :meth:`save` wrote to ``path``, rebuilt with safe loaders only (no pickled code).

        One signature for every fitted encoder; each uses what it needs: ``encoder`` (the encoder, built with
        the run's options, that fitted it: a torch encoder rebuilds its module from it), ``n_voxels`` and
        ``target_shape`` (when given, a checkpoint of other sizes is refused with a CheckpointMismatchError),
        ``device`` and ``precision`` (where a torch model runs).
        """
        raise NotImplementedError(f"{cls.__name__} cannot be loaded back: it implements no load(path, ...)")


class Encoder(Configurable, ABC):
    """Voxels -> embedding prediction: builds, trains and returns a :class:`FittedEncoder`."""

    name: ClassVar[str] = "encoder"
    #: The target its reference trains on: "tokens" (Lite-Mind's, MindEye's headline 257x768) or "pooled".
    #: A run naming no target gets the dataset's ``token_target`` for "tokens", except on demo-scale data.
    reference_target: ClassVar[str] = "pooled"

    @abstractmethod
    def fit(self, data: FitData, settings: TrainSettings, reporter: Reporter) -> FittedEncoder: ...

    def quick_recipe(self) -> QuickRecipe | None:
        """The recipe for demo-scale data (see :class:`QuickRecipe`); None: the defaults are quick already."""
        return None

    def describe(self, n_voxels: int, target_shape: Shape) -> dict[str, Any]:
        """Parameter counts and other figures ``brainbench info`` prints."""
        return {}


# ------------------------------------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    description: str = ""


@dataclass(frozen=True)
class MetricResult:
    name: str
    value: float
    higher_is_better: bool
    interval: tuple[float, float] | None = None  # 95% interval where the metric has one
    chance: float | None = None


@dataclass
class FitStage:
    """What a task may fit a second stage on (the LAION task's diffusion prior): the fitted encoder, the
    training trials it was fitted on (predict them in chunks), and the run's settings, reporter and budget."""

    encoder: FittedEncoder
    trials: Trials
    settings: TrainSettings
    reporter: Reporter
    budget: str = "reference"  # "quick": demo-scale data or --budget quick (the stage trains its quick recipe)


@dataclass
class EvalContext:
    """Everything a task may use: one row of ``predictions``/``targets`` per test stimulus."""

    predictions: np.ndarray  # (n, *target_shape) float32
    targets: np.ndarray  # (n, *target_shape) float32: ground-truth embeddings
    stimulus_ids: np.ndarray  # (n,)
    dataset: Dataset
    target: Target
    subject: int
    seed: int
    output_dir: Path  # figures and tables written here are logged as run artifacts
    artifacts: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # caveats shown to the user and recorded with the run
    # Metric name -> (n,) outcome in [0, 1] per row of stimulus_ids (1/0 hit, or an item's expected hit rate);
    # the runner stores them as the per_item.json artifact so `brainbench compare` can pair encoders by item.
    per_item: dict[str, np.ndarray] = field(default_factory=dict)
    #: The training side of the run, for tasks that train on the encoder's training predictions; None when
    #: the caller has none (a task evaluated on predictions alone).
    training: FitStage | None = None


class Task(Configurable, ABC):
    """An evaluation: turns test predictions into metrics, each declaring higher-is-better."""

    name: ClassVar[str] = "task"
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()

    #: Dataset and target used when the run names none.
    default_dataset: ClassVar[str] = "synthetic-nsd"
    default_target: ClassVar[str | None] = None
    #: The split predictions are made on.
    split: ClassVar[str] = "test"

    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> list[MetricResult]: ...

    def check_ready(self) -> None:
        """Called before any training or MLflow run: raise a BrainbenchError for what would fail only at
        evaluation (an unreachable back end, a missing index). Default: nothing to check."""
        return None

    def spec(self, name: str) -> MetricSpec:
        for spec in self.metrics:
            if spec.name == name:
                return spec
        raise KeyError(f"task {self.name!r} declares no metric {name!r}")

    def result(
        self,
        name: str,
        value: float,
        interval: tuple[float, float] | None = None,
        chance: float | None = None,
    ) -> MetricResult:
        """A result for a declared metric, carrying the metric's direction."""
        spec = self.spec(name)
        return MetricResult(name, float(value), spec.higher_is_better, interval, chance)
