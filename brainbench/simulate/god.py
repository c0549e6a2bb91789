"""Synthetic GOD (Generic Object Decoding) written in bdpy's BData HDF5 layout.

``write_synthetic_god(root, seed, subjects, scale)`` writes, per subject, ``Subject{N}.h5``:
- ``/dataset``: float64 matrix (n_samples, n_columns). Columns: the voxels first (VoxelData), then one column
  each for DataType, Run, Block, stimulus_id, Label, image_index.
- ``/metadata/key`` and ``/metadata/description``: byte strings, one per key.
- ``/metadata/value``: float64 (n_keys, n_columns); 1 where a key applies to a column, NaN elsewhere, except
  ``voxel_x``/``voxel_y``/``voxel_z`` which hold each voxel's coordinate (NaN on non-voxel columns).
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
Text embeddings share each category's direction but sit in a shifted cone (a modality gap): image-text
cosines are lower than image-image cosines, as with CLIP. Voxels are z-scored per run.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from brainbench.simulate.brain import ClipSpace, SubjectBrain, category_centroids, make_stimuli, rng, zscore_rows
from brainbench.simulate.nsd import atomic_path

GENERATOR_VERSION = "1"
ROIS = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA")
#: Share of the visual-cortex voxels in each ROI, in voxel order (early to high-level).
ROI_SHARES = (0.22, 0.18, 0.14, 0.1, 0.2, 0.08, 0.08)
TEMPLATES = ("a photo of a {}.", "an image of a {}.", "a picture of the {}.", "a close-up photo of a {}.")
GOD_SCALES = {
    # (train categories, images per train category, test categories, test repeats, imagery repeats, voxels)
    "small": (150, 8, 50, 35, 10, 4466),
    "tiny": (20, 4, 10, 5, 3, 300),
}


def _subject_voxels(n_voxels: int, subject: int) -> int:
    return n_voxels + 37 * (subject - 1)  # own voxel count per subject


def write_synthetic_god(root: Path, seed: int = 0, subjects=(1,), scale: str = "small") -> list[Path]:
    """Write ``Subject{N}.h5`` for each subject and ``stimuli.hdf5``; returns the subject files.

    Processes started together write it once: one writes under a lock next to ``root`` (the others wait,
    then find it complete), into a temporary folder renamed to ``root`` (when ``root`` is new or empty), so a
    reader never sees some subjects' files without the others.
    """
    from brainbench.locks import hold

    root = Path(root)
    with hold(root.with_name(root.name + ".lock"), f"the synthetic GOD in {root}", patience=30.0):
        done = _complete(root, seed, subjects, scale)
        if done is not None:
            return done
        if root.is_dir() and any(root.iterdir()):  # a folder with other files: each file renamed into it
            return _write_all(root, seed, subjects, scale)
        from brainbench.locks import building_directory

        with building_directory(root) as staging:
            paths = _write_all(staging, seed, subjects, scale)
        return [root / path.name for path in paths]


def _complete(root: Path, seed: int, subjects, scale: str) -> list[Path] | None:
    """The subject files, when ``root`` already holds this seed's and scale's data for every subject."""
    paths = [root / f"Subject{subject}.h5" for subject in subjects]
    if not all(path.is_file() for path in paths) or not (root / "stimuli.hdf5").is_file():
        return None
    try:
        with h5py.File(root / "stimuli.hdf5", "r") as f:
            marker = json.loads(f.attrs["marker"])
    except (OSError, KeyError, ValueError):
        return None
    wanted = {"generator": "brainbench.simulate.god", "version": GENERATOR_VERSION, "seed": seed, "scale": scale}
    return paths if marker == wanted else None


def _write_all(root: Path, seed: int, subjects, scale: str) -> list[Path]:
    n_train_cat, per_cat, n_test_cat, test_reps, imagery_reps, n_vox = GOD_SCALES[scale]
    root.mkdir(parents=True, exist_ok=True)
    n_cat = n_train_cat + n_test_cat
    gen = rng(seed, "god-design")
    order = gen.permutation(n_cat)  # which categories are held out for the test
    train_cats, test_cats = np.sort(order[:n_train_cat]), np.sort(order[n_train_cat:])
    category = np.concatenate([np.repeat(train_cats, per_cat), test_cats])
    stimuli = make_stimuli(seed, category)
    clip = ClipSpace(seed)
    names = [f"category_{k:03d}" for k in range(n_cat)]
    n_train = len(train_cats) * per_cat
    with atomic_path(root / "stimuli.hdf5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("clip_pooled", data=clip.pooled(stimuli))
        f.create_dataset("category", data=category.astype(np.int64))
        f.create_dataset("category_names", data=names, dtype=h5py.string_dtype())
        text = clip.text(seed, category_centroids(seed, n_cat), len(TEMPLATES))
        f.create_dataset("text_embeddings", data=text)
        f.create_dataset("templates", data=list(TEMPLATES), dtype=h5py.string_dtype())
        f.create_dataset("train_categories", data=train_cats.astype(np.int64))
        f.create_dataset("test_categories", data=test_cats.astype(np.int64))
        f.attrs["synthetic"] = True
        f.attrs["marker"] = json.dumps(
            {"generator": "brainbench.simulate.god", "version": GENERATOR_VERSION, "seed": seed, "scale": scale}
        )
    test_images = np.arange(n_train, n_train + len(test_cats))
    samples = [
        (1, gen.permutation(n_train), 50),
        (2, gen.permutation(np.repeat(test_images, test_reps)), 50),
        (3, gen.permutation(np.repeat(test_images, imagery_reps)), 25),
    ]
    paths = []
    for subject in subjects:
        path = root / f"Subject{subject}.h5"
        with atomic_path(path) as tmp:
            _write_subject(tmp, seed, subject, _subject_voxels(n_vox, subject), stimuli, category, names, samples)
        paths.append(path)
    return paths


def _write_subject(path, seed, subject, n_voxels, stimuli, category, names, samples) -> None:
    brain = SubjectBrain(seed, 100 + subject, n_voxels, gain_median=0.2)
    signal = brain.signal(stimuli.latent)  # once per image; runs index into it
    blocks, columns = [], []
    for data_type, images, run_length in samples:
        runs = np.arange(len(images)) // run_length
        voxels = np.empty((len(images), n_voxels), dtype=np.float32)
        for run in np.unique(runs):
            rows = np.flatnonzero(runs == run)
            betas = brain.session(signal[images[rows]], int(data_type * 1000 + run))
            if data_type == 3:  # imagery: weaker, noisier signal
                betas = zscore_rows(0.4 * betas + rng(seed, "imagery", subject, run).standard_normal(betas.shape))
            voxels[rows] = betas
        block = np.arange(len(images)) % run_length + 1
        stim_code = 1e6 + category[images] + (images + 1) / 1e3
        label = category[images].astype(float)
        columns.append(np.column_stack([np.full(len(images), data_type), runs + 1, block, stim_code, label, images]))
        blocks.append(voxels)
    dataset = np.hstack([np.vstack(blocks).astype(np.float64), np.vstack(columns)])
    keys, values, descriptions = _metadata(n_voxels, rng(seed, "god-coords", subject))
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=dataset)
        f.create_dataset("metadata/key", data=[k.encode() for k in keys])
        f.create_dataset("metadata/description", data=[d.encode() for d in descriptions])
        f.create_dataset("metadata/value", data=values)
        for k, name in enumerate(names):
            f.create_dataset(f"vmap/Label/{k}", data=name.encode())


def _metadata(n_voxels: int, gen: np.random.Generator) -> tuple[list[str], np.ndarray, list[str]]:
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
    # Coordinates follow the voxel order so that "smooth along the voxel axis" is smooth in space.
    walk = np.cumsum(gen.normal(0, 1, (n_voxels, 3)), axis=0)
    for axis, name in enumerate(("voxel_x", "voxel_y", "voxel_z")):
        value = np.full(n_columns, np.nan)
        value[:n_voxels] = np.round(walk[:, axis] * 3.0, 1)
        rows[name] = (value, f"voxel {name[-1]} coordinate (mm)")
    bounds = np.concatenate([[0], np.round(np.cumsum(ROI_SHARES) * n_voxels).astype(int)])
    bounds[-1] = n_voxels
    roi_columns = {roi: np.arange(bounds[i], bounds[i + 1]) for i, roi in enumerate(ROIS)}
    rows["ROI_VC"] = (mark(voxel_columns), "1 = ROI VC voxel")
    rows["ROI_LVC"] = (mark(np.concatenate([roi_columns[r] for r in ("V1", "V2", "V3")])), "1 = ROI LVC voxel")
    rows["ROI_HVC"] = (mark(np.concatenate([roi_columns[r] for r in ("LOC", "FFA", "PPA")])), "1 = ROI HVC voxel")
    for roi in ROIS:
        rows[f"ROI_{roi}"] = (mark(roi_columns[roi]), f"1 = ROI {roi} voxel")
    keys = list(rows)
    return keys, np.vstack([rows[k][0] for k in keys]), [rows[k][1] for k in keys]
