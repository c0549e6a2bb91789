"""Synthetic GOD (Generic Object Decoding) written in bdpy's BData HDF5 layout, one subject at a time.

``write_synthetic_god(root, seed, subjects, scale)`` writes ``stimuli.hdf5`` once and ``Subject{N}.h5`` for
each requested subject that is not there yet (a run of one subject writes one subject file):
- ``/dataset``: float64 matrix (n_samples, n_columns). Columns: the voxels first (VoxelData), then one column
  each for DataType, Run, Block, stimulus_id, Label, image_index.
- ``/metadata/key`` and ``/metadata/description``: byte strings, one per key.
- ``/metadata/value``: float64 (n_keys, n_columns); 1 where a key applies to a column, NaN elsewhere, except
  ``voxel_x``/``voxel_y``/``voxel_z`` which hold each voxel's coordinate in mm (NaN on non-voxel columns).
  Keys: VoxelData, DataType, Run, Block, stimulus_id, Label, image_index, voxel_x, voxel_y, voxel_z,
  ROI_VC, ROI_LVC, ROI_HVC, ROI_V1, ROI_V2, ROI_V3, ROI_V4, ROI_LOC, ROI_FFA, ROI_PPA.
- ``/vmap/Label/<k>``: the category name of Label value k (bdpy's value map).
Sample columns: DataType 1 = training perception (150 categories x 8 images, one trial each: 1200 samples),
2 = test perception (50 other categories x 1 image x 35 repeats: 1750 samples), 3 = imagery (the same 50 test
categories x 10 repeats: 500 samples, image_index = that category's test image). Label = category index
(0..199, rows of ``category_names``); image_index = row in ``stimuli.hdf5``; stimulus_id = a GOD-style float
code 1e6 + category + image / 1e3 (unique per image). Run numbers count within each DataType, 1-based;
Block = position within the run.
``stimuli.hdf5`` beside them: ``clip_pooled`` (n_images, 768) float32 indexed by image_index, ``category``
(n_images,) int64, ``category_names`` (200,) UTF-8 strings, ``text_embeddings`` (200, n_templates, 768) float32
unit-norm, ``templates`` (n_templates,) strings, and ``train_categories`` / ``test_categories`` (int64 arrays).
Images 0..1199 are the training images (category-major), 1200..1249 the test images.

The brain is the NSD simulator's (same visual world, same kind of anatomy and tuning) on GOD's grid: 3 mm
voxels, about 4,500 visual-cortex voxels labelled V1, V2, V3 (prf bands), V4 (hV4 and the mid-ventral
stream), LOC (lateral and parietal streams), FFA and PPA (the ventral stream's lateral and medial halves);
LVC = V1-V3, HVC = LOC, FFA and PPA, VC = all of them. Difficulty comes from GOD's published design
(Horikawa & Kamitani 2017): 1200 training images seen once, 50 zero-shot test categories seen 35 times,
single-sample SNR assumed equal to NSD's (median ncsnr 0.26: 3T's lower SNR against 3 mm voxels and 9-s
stimulus blocks; no per-voxel ncsnr is published for GOD); imagery carries 35% of the perceptual signal.
Voxels are z-scored per run.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from brainbench.simulate.anatomy import Anatomy, make_anatomy
from brainbench.simulate.brain import SubjectBrain
from brainbench.simulate.nsd import atomic_path
from brainbench.simulate.world import ClipSpace, Stimuli, make_stimuli, rng

GENERATOR_VERSION = "2"
ROIS = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA")
GOD_VOXEL_MM = 3.0
GOD_VOLUME = (64, 64, 50)  # X, Y, Z at 3 mm
IMAGERY_SIGNAL = 0.35
TEMPLATES = ("a photo of a {}.", "an image of a {}.", "a picture of the {}.", "a close-up photo of a {}.")
GOD_SCALES = {
    # (train categories, images per train category, test categories, test repeats, imagery repeats, voxels)
    "small": (150, 8, 50, 35, 10, 4466),
    "tiny": (20, 4, 10, 5, 3, 300),
}


def _subject_voxels(n_voxels: int, subject: int) -> int:
    return n_voxels + 37 * (subject - 1)  # own voxel count per subject


def subject_file(root: Path, subject: int) -> Path:
    return Path(root) / f"Subject{subject}.h5"


def write_synthetic_god(root: Path, seed: int = 0, subjects=(1,), scale: str = "small") -> list[Path]:
    """Write ``stimuli.hdf5`` (once) and ``Subject{N}.h5`` for each requested subject missing; returns the
    subject files.

    Processes started together write each file once: one writes under a lock next to ``root`` while the
    others wait, then find it there. Every file is written under a temporary name and renamed, so a reader
    never sees a half-written subject; a folder holding another seed's or version's stimuli is refused.
    """
    from brainbench.locks import hold

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with hold(root.with_name(root.name + ".lock"), f"the synthetic GOD in {root}", patience=30.0):
        design = GodDesign(seed, scale)
        if not _stimuli_match(root, design):
            if any(root.glob("Subject*.h5")):
                raise ValueError(f"{root} holds synthetic GOD files of another seed, scale or version")
            with atomic_path(root / "stimuli.hdf5") as tmp:
                design.write_stimuli(tmp)
        paths = []
        for subject in subjects:
            path = subject_file(root, subject)
            if not path.is_file():
                with atomic_path(path) as tmp:
                    design.write_subject(tmp, subject)
            paths.append(path)
        return paths


def write_one_subject(root: Path, seed: int, scale: str, subject: int) -> Path:
    """One subject's file (written if missing): what a dataset calls when a subject is first used."""
    return write_synthetic_god(root, seed=seed, subjects=(subject,), scale=scale)[0]


def _marker(seed: int, scale: str) -> dict[str, object]:
    return {"generator": "brainbench.simulate.god", "version": GENERATOR_VERSION, "seed": seed, "scale": scale}


def _stimuli_match(root: Path, design: GodDesign) -> bool:
    try:
        with h5py.File(root / "stimuli.hdf5", "r") as f:
            return json.loads(f.attrs["marker"]) == _marker(design.seed, design.scale)
    except (OSError, KeyError, ValueError):
        return False


class GodDesign:
    """GOD's categories, images and sample order (shared by the subjects), and each subject's brain."""

    def __init__(self, seed: int, scale: str) -> None:
        self.seed, self.scale = seed, scale
        n_train_cat, per_cat, n_test_cat, test_reps, imagery_reps, self.n_voxels = GOD_SCALES[scale]
        self.n_categories = n_train_cat + n_test_cat
        gen = rng(seed, "god-design")
        order = gen.permutation(self.n_categories)  # which categories are held out for the test
        self.train_cats, self.test_cats = np.sort(order[:n_train_cat]), np.sort(order[n_train_cat:])
        self.category = np.concatenate([np.repeat(self.train_cats, per_cat), self.test_cats])
        self.names = [f"category_{k:03d}" for k in range(self.n_categories)]
        self.n_train = len(self.train_cats) * per_cat
        test_images = np.arange(self.n_train, self.n_train + len(self.test_cats))
        self.samples = [  # (DataType, images in presentation order, samples per run)
            (1, gen.permutation(self.n_train), 50),
            (2, gen.permutation(np.repeat(test_images, test_reps)), 50),
            (3, gen.permutation(np.repeat(test_images, imagery_reps)), 25),
        ]
        self._clip: ClipSpace | None = None
        self._stimuli: Stimuli | None = None

    @property
    def clip(self) -> ClipSpace:
        if self._clip is None:
            self._clip = ClipSpace(self.seed)
        return self._clip

    @property
    def stimuli(self) -> Stimuli:
        if self._stimuli is None:
            self._stimuli = make_stimuli(self.seed, self.category, tag="god")
        return self._stimuli

    def write_stimuli(self, path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("clip_pooled", data=self.clip.pooled(self.stimuli))
            f.create_dataset("category", data=self.category.astype(np.int64))
            f.create_dataset("category_names", data=self.names, dtype=h5py.string_dtype())
            f.create_dataset("text_embeddings", data=self.clip.text(self.n_categories, len(TEMPLATES)))
            f.create_dataset("templates", data=list(TEMPLATES), dtype=h5py.string_dtype())
            f.create_dataset("train_categories", data=self.train_cats.astype(np.int64))
            f.create_dataset("test_categories", data=self.test_cats.astype(np.int64))
            f.attrs["synthetic"] = True
            f.attrs["marker"] = json.dumps(_marker(self.seed, self.scale))

    def anatomy(self, subject: int) -> Anatomy:
        step = 1 if self.scale == "small" else 2
        volume = tuple(-(-n // step) for n in GOD_VOLUME)
        n_voxels = _subject_voxels(self.n_voxels, subject)
        return make_anatomy(self.seed, subject, n_voxels, volume, GOD_VOXEL_MM * step, tag="god")

    def brain(self, subject: int) -> SubjectBrain:
        return SubjectBrain(self.seed, subject, self.anatomy(subject), self.clip.world, tag="god")

    def write_subject(self, path: Path, subject: int) -> None:
        brain = self.brain(subject)
        signal = brain.signal(self.stimuli)  # once per image; runs index into it
        blocks, columns = [], []
        for data_type, images, run_length in self.samples:
            runs = np.arange(len(images)) // run_length
            voxels = np.empty((len(images), brain.n_voxels), dtype=np.float32)
            strength = IMAGERY_SIGNAL if data_type == 3 else 1.0
            for run in np.unique(runs):
                rows = np.flatnonzero(runs == run)
                voxels[rows] = brain.session(strength * signal[images[rows]], int(data_type * 1000 + run))
            block = np.arange(len(images)) % run_length + 1
            stim_code = 1e6 + self.category[images] + (images + 1) / 1e3
            label = self.category[images].astype(float)
            columns.append(
                np.column_stack([np.full(len(images), data_type), runs + 1, block, stim_code, label, images])
            )
            blocks.append(voxels)
        dataset = np.hstack([np.vstack(blocks).astype(np.float64), np.vstack(columns)])
        keys, values, descriptions = _metadata(brain.anatomy)
        with h5py.File(path, "w") as f:
            f.create_dataset("dataset", data=dataset)
            f.create_dataset("metadata/key", data=[k.encode() for k in keys])
            f.create_dataset("metadata/description", data=[d.encode() for d in descriptions])
            f.create_dataset("metadata/value", data=values)
            for k, name in enumerate(self.names):
                f.create_dataset(f"vmap/Label/{k}", data=name.encode())


def god_rois(anatomy: Anatomy) -> dict[str, np.ndarray]:
    """GOD's ROI columns from the NSD-style atlases: each voxel in exactly one of V1..PPA."""
    prf, streams = anatomy.labels["prf-visualrois"], anatomy.labels["streams"]
    lateral = np.abs(anatomy.ijk[:, 0] - (anatomy.shape_xyz[0] - 1) / 2)
    ventral = streams == 5
    fusiform = ventral & (lateral >= np.median(lateral[ventral])) if ventral.any() else ventral
    rois = {
        "V1": np.isin(prf, (1, 2)),
        "V2": np.isin(prf, (3, 4)),
        "V3": np.isin(prf, (5, 6)) | ((prf == 0) & (streams == 1)),  # and the early band's unlabelled rest
        "V4": (prf == 7) | ((prf == 0) & (streams == 2)),
        "LOC": np.isin(streams, (3, 4, 6, 7)) & (prf == 0),
        "FFA": fusiform,
        "PPA": ventral & ~fusiform,
    }
    return rois


def _metadata(anatomy: Anatomy) -> tuple[list[str], np.ndarray, list[str]]:
    n_voxels = anatomy.n_voxels
    label_columns = ["DataType", "Run", "Block", "stimulus_id", "Label", "image_index"]
    n_columns = n_voxels + len(label_columns)
    rows: dict[str, tuple[np.ndarray, str]] = {}

    def mark(columns: np.ndarray) -> np.ndarray:
        value = np.full(n_columns, np.nan)
        value[columns] = 1.0
        return value

    voxel_columns = np.arange(n_voxels)
    rows["VoxelData"] = (mark(voxel_columns), "1 = voxel data")
    for i, name in enumerate(label_columns):
        rows[name] = (mark(np.array([n_voxels + i])), f"1 = {name}")
    millimetres = (anatomy.ijk - (np.array(anatomy.shape_xyz) - 1) / 2) * anatomy.voxel_mm
    for axis, name in enumerate(("voxel_x", "voxel_y", "voxel_z")):
        value = np.full(n_columns, np.nan)
        value[:n_voxels] = millimetres[:, axis]
        rows[name] = (value, f"voxel {name[-1]} coordinate (mm)")
    roi_columns = {roi: np.flatnonzero(mask) for roi, mask in god_rois(anatomy).items()}
    rows["ROI_VC"] = (mark(voxel_columns), "1 = ROI VC voxel")
    rows["ROI_LVC"] = (mark(np.concatenate([roi_columns[r] for r in ("V1", "V2", "V3")])), "1 = ROI LVC voxel")
    rows["ROI_HVC"] = (mark(np.concatenate([roi_columns[r] for r in ("LOC", "FFA", "PPA")])), "1 = ROI HVC voxel")
    for roi in ROIS:
        rows[f"ROI_{roi}"] = (mark(roi_columns[roi]), f"1 = ROI {roi} voxel")
    keys = list(rows)
    return keys, np.vstack([rows[k][0] for k in keys]), [rows[k][1] for k in keys]
