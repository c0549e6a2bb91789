"""Synthetic NSD written in the MindEye2 layout, so the real NSD reader reads it.

Files in ``root``:
- ``betas_all_subj01_fp32_renorm.hdf5``: dataset ``betas`` (n_trials, n_voxels) float32, rows in trial order,
  z-scored per voxel within each session. One file per subject (1, 2, 5, 7), written when first requested.
- ``trials_subj01.csv``: columns ``image_index,trial_index,session,split`` (split is ``train`` or ``test``);
  ``trial_index`` is the row in the betas file, ``image_index`` the row in the target/image files.
- ``clip_targets.hdf5``: ``pooled`` (n_images, 768) float32 unit-norm; ``tokens`` (n_images, 257, 768) float16
  only when asked for; ``category`` (n_images,) int64; ``category_names`` (n_categories,) UTF-8 strings.
- ``coco_images_224_float16.hdf5``: ``images`` (n_images, 3, S, S) float16 in [0, 1], only when asked for.
- ``brainbench_synthetic.json``: marker saying the data are synthetic (generator, version, scale, seed).
- ``rois_subj01.hdf5``: per-voxel ROI labels in betas column order, and NSD's ROI volumes and label names
  under ``nsddata/`` (see ``atlas_files.py`` and docs/simulator.md).

Test images are shared by all subjects, as in NSD. Every file is written under a temporary name and renamed,
so an interrupted generation never leaves a file that looks complete; one process at a time writes (a lock
file in ``root``), so processes started together generate the data once.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from brainbench.simulate.anatomy import NSD_VOLUME, NSD_VOXEL_MM, Anatomy, make_anatomy
from brainbench.simulate.brain import SubjectBrain
from brainbench.simulate.world import (
    EMBED_DIM,
    N_TOKENS,
    ClipSpace,
    Stimuli,
    images_from_stimuli,
    make_stimuli,
    rng,
)

GENERATOR_VERSION = "4"  # bump when generated data change; cached folders are keyed by it
SUBJECTS = (1, 2, 5, 7)
MARKER = "brainbench_synthetic.json"
TARGETS_FILE = "clip_targets.hdf5"
IMAGES_FILE = "coco_images_224_float16.hdf5"


def betas_file(subject: int) -> str:
    return f"betas_all_subj{subject:02d}_fp32_renorm.hdf5"


def trials_file(subject: int) -> str:
    return f"trials_subj{subject:02d}.csv"


@dataclass(frozen=True)
class NsdScale:
    """Sizes of one synthetic NSD; ``shared_train_pool`` gives all subjects the same training images."""

    name: str
    voxels: dict[int, int]
    n_train_images: int
    train_trials: int
    n_test_images: int
    test_trials: int
    trials_per_session: int
    n_categories: int
    shared_train_pool: bool
    image_size: int
    grid_step: int = 1  # the 3-D grid is NSD's 1.8 mm one coarsened by this factor per axis

    def volume(self, subject: int) -> tuple[int, int, int]:
        return tuple(-(-n // self.grid_step) for n in NSD_VOLUME[subject])

    @property
    def voxel_mm(self) -> float:
        return NSD_VOXEL_MM * self.grid_step


REAL_VOXELS = {1: 15724, 2: 14278, 5: 13039, 7: 12682}

SCALES: dict[str, NsdScale] = {
    # Real NSD sizes (37 released sessions of 750 trials; 3 held-back sessions explain 2770 < 3 x 982).
    "nsd": NsdScale("nsd", REAL_VOXELS, 8859, 24980, 982, 2770, 750, 80, False, 64),
    # Default: trains in seconds on a laptop CPU.
    # 400 test images: the 300-way protocol runs as published and differs from full (400-way) retrieval.
    "small": NsdScale(
        "small", {s: v // 8 for s, v in REAL_VOXELS.items()}, 1000, 2000, 400, 1200, 300, 40, True, 32, grid_step=2
    ),
    # For tests only.
    "tiny": NsdScale(
        "tiny", {s: v // 64 for s, v in REAL_VOXELS.items()}, 150, 300, 30, 90, 130, 10, True, 16, grid_step=4
    ),
}


def scale_named(name: str) -> NsdScale:
    from brainbench.errors import DataError

    if name not in SCALES:
        raise DataError(f"unknown synthetic NSD scale {name!r}; known: {', '.join(SCALES)}")
    return SCALES[name]


# ------------------------------------------------------------------------------------------- design


@dataclass
class Design:
    """Which image plays which role: test images (shared), and each subject's training images."""

    n_images: int
    category: np.ndarray
    test_ids: np.ndarray
    train_ids: dict[int, np.ndarray]


def make_design(scale: NsdScale, seed: int) -> Design:
    pools = 1 if scale.shared_train_pool else len(SUBJECTS)
    n_images = scale.n_test_images + pools * scale.n_train_images
    gen = rng(seed, "design", scale.name)
    order = gen.permutation(n_images)  # image ids carry no role information
    test_ids = np.sort(order[: scale.n_test_images])
    train_ids = {}
    for i, subject in enumerate(SUBJECTS):
        pool = 0 if scale.shared_train_pool else i
        start = scale.n_test_images + pool * scale.n_train_images
        train_ids[subject] = np.sort(order[start : start + scale.n_train_images])
    category = gen.integers(0, scale.n_categories, size=n_images)
    return Design(n_images, category, test_ids, train_ids)


def repeats_per_image(gen: np.random.Generator, n_images: int, n_trials: int, min_repeats: int) -> np.ndarray:
    """Up to 3 repeats per image, summing exactly to ``n_trials``, each at least ``min_repeats``."""
    removable = 3 - min_repeats
    deficit = 3 * n_images - n_trials
    if not 0 <= deficit <= removable * n_images:
        raise ValueError(f"cannot spread {n_trials} trials over {n_images} images with 1..3 repeats")
    slots = gen.choice(n_images * removable, size=deficit, replace=False) // max(removable, 1)
    return 3 - np.bincount(slots, minlength=n_images)


def subject_trials(scale: NsdScale, seed: int, design: Design, subject: int) -> dict[str, np.ndarray]:
    """The subject's trial table in chronological order (one row per betas row)."""
    gen = rng(seed, "trials", scale.name, subject)
    test_reps = repeats_per_image(gen, scale.n_test_images, scale.test_trials, min_repeats=2)
    train_reps = repeats_per_image(gen, scale.n_train_images, scale.train_trials, min_repeats=1)
    images = np.concatenate([np.repeat(design.test_ids, test_reps), np.repeat(design.train_ids[subject], train_reps)])
    is_test = np.concatenate([np.ones(test_reps.sum(), bool), np.zeros(train_reps.sum(), bool)])
    order = gen.permutation(len(images))
    n = len(images)
    return {
        "image_index": images[order].astype(np.int64),
        "trial_index": np.arange(n, dtype=np.int64),
        "session": (np.arange(n) // scale.trials_per_session + 1).astype(np.int64),
        "split": np.where(is_test[order], "test", "train"),
    }


# -------------------------------------------------------------------------------------------- writing


GENERATE_LOCK = ".generate.lock"  # held while a process writes files of the folder


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``path`` only if the block finishes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class SyntheticNsd:
    """Generates (lazily, per subject) one synthetic NSD dataset in ``root``."""

    def __init__(self, root: Path, scale: str = "small", seed: int = 0) -> None:
        self.root = Path(root)
        self.scale = scale_named(scale)
        self.seed = seed
        self._design: Design | None = None
        self._stimuli: Stimuli | None = None
        self._clip: ClipSpace | None = None

    @property
    def clip(self) -> ClipSpace:
        if self._clip is None:
            self._clip = ClipSpace(self.seed)
        return self._clip

    def anatomy(self, subject: int) -> Anatomy:
        scale = self.scale
        return make_anatomy(self.seed, subject, scale.voxels[subject], scale.volume(subject), scale.voxel_mm)

    def brain(self, subject: int) -> SubjectBrain:
        return SubjectBrain(self.seed, subject, self.anatomy(subject), self.clip.world)

    @property
    def design(self) -> Design:
        if self._design is None:
            self._design = make_design(self.scale, self.seed)
        return self._design

    @property
    def stimuli(self) -> Stimuli:
        if self._stimuli is None:
            self._stimuli = make_stimuli(self.seed, self.design.category)
        return self._stimuli

    def marker(self) -> dict[str, object]:
        return {
            "synthetic": True,
            "generator": "brainbench.simulate.nsd",
            "generator_version": GENERATOR_VERSION,
            "layout": "mindeye2",
            "scale": self.scale.name,
            "seed": self.seed,
            "subjects": list(SUBJECTS),
            "sizes": asdict(self.scale),
        }

    # Each ensure_* is a no-op when its file is already complete. Several processes may ask at once (runs
    # started together on a fresh BRAINBENCH_HOME): one writes, under the folder's lock, the others wait.
    def _generating(self):
        from brainbench.locks import hold

        return hold(self.root / GENERATE_LOCK, f"the synthetic NSD in {self.root}", patience=30.0)

    def _common_missing(self, tokens: bool, images: bool) -> bool:
        target = self.root / TARGETS_FILE
        return (
            not (self.root / MARKER).exists()
            or not target.exists()
            or (tokens and not _has_key(target, "tokens"))
            or (images and not (self.root / IMAGES_FILE).exists())
        )

    def ensure_common(self, tokens: bool = False, images: bool = False) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self._common_missing(tokens, images):
            return
        with self._generating():
            marker = self.root / MARKER
            if not marker.exists():
                with atomic_path(marker) as tmp:
                    tmp.write_text(json.dumps(self.marker(), indent=2, default=str))
            target = self.root / TARGETS_FILE
            if not target.exists() or (tokens and not _has_key(target, "tokens")):
                with atomic_path(target) as tmp:
                    self._write_targets(tmp, tokens)
            if images and not (self.root / IMAGES_FILE).exists():
                with atomic_path(self.root / IMAGES_FILE) as tmp:
                    self._write_images(tmp)

    def ensure_subject(self, subject: int) -> None:
        if subject not in SUBJECTS:
            from brainbench.errors import DataError

            raise DataError(f"synthetic NSD has subjects {list(SUBJECTS)}, not {subject}")
        self.ensure_common()
        betas, table = self.root / betas_file(subject), self.root / trials_file(subject)
        if betas.exists() and table.exists():
            return
        with self._generating():
            if betas.exists() and table.exists():  # another process wrote them while this one waited
                return
            from brainbench.simulate.atlas_files import write_atlases

            trials = subject_trials(self.scale, self.seed, self.design, subject)
            brain = self.brain(subject)
            write_atlases(self.root, subject, brain.anatomy, atomic_path)
            with atomic_path(betas) as tmp:
                self._write_betas(tmp, brain, trials)
            with atomic_path(table) as tmp:  # written last: its presence marks the subject complete
                write_trial_table(tmp, trials)

    def _write_targets(self, path: Path, tokens: bool) -> None:
        clip = self.clip
        names = [f"category_{k:03d}" for k in range(self.scale.n_categories)]
        with h5py.File(path, "w") as f:
            f.create_dataset("pooled", data=clip.pooled(self.stimuli))
            f.create_dataset("category", data=self.design.category.astype(np.int64))
            f.create_dataset("category_names", data=names, dtype=h5py.string_dtype())
            f.attrs["synthetic"] = True
            if tokens:
                n = self.design.n_images
                ds = f.create_dataset(
                    "tokens", (n, N_TOKENS, EMBED_DIM), dtype=np.float16, chunks=(8, N_TOKENS, EMBED_DIM)
                )
                for start in range(0, n, 64):
                    rows = np.arange(start, min(start + 64, n))
                    ds[start : rows[-1] + 1] = clip.tokens(self.stimuli.take(rows), start).astype(np.float16)

    def _write_images(self, path: Path) -> None:
        size, n = self.scale.image_size, self.design.n_images
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("images", (n, 3, size, size), dtype=np.float16)
            for start in range(0, n, 512):
                rows = np.arange(start, min(start + 512, n))
                ds[start : rows[-1] + 1] = images_from_stimuli(self.seed, self.stimuli.take(rows), size)

    def _write_betas(self, path: Path, brain: SubjectBrain, trials: dict[str, np.ndarray]) -> None:
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("betas", (len(trials["trial_index"]), brain.n_voxels), dtype=np.float32)
            for session in np.unique(trials["session"]):
                rows = np.flatnonzero(trials["session"] == session)
                signal = brain.signal(self.stimuli.take(trials["image_index"][rows]))
                ds[rows[0] : rows[-1] + 1] = brain.session(signal, int(session))
            f.attrs["synthetic"] = True


def write_trial_table(path: Path, trials: dict[str, np.ndarray]) -> None:
    columns = ["image_index", "trial_index", "session", "split"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*(trials[c].tolist() for c in columns), strict=True))


def _has_key(path: Path, key: str) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return key in f
    except OSError:
        return False


def generate_synthetic_nsd(
    root: Path,
    scale: str = "small",
    seed: int = 0,
    subjects: tuple[int, ...] = (1,),
    tokens: bool = False,
    images: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SyntheticNsd:
    """Write (or complete) a synthetic NSD in ``root`` and return its generator."""
    sim = SyntheticNsd(root, scale, seed)
    sim.ensure_common(tokens=tokens, images=images)
    for subject in subjects:
        if progress:
            progress(f"generating synthetic NSD subject {subject} ({scale})")
        sim.ensure_subject(subject)
    return sim
