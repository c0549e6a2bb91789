"""NSD folders written with the formats' own tools (h5py, webdataset's TarWriter, numpy, Pillow), never with
brainbench's writers, so the readers are checked against the published layouts rather than against brainbench.

``write_mindeye2_release`` lays a folder out like the MindEye2 public release (smaller: few trials, voxels and
images; the images file holds ``n_images`` rows rather than 73,000 and 64x64 pixels rather than 224x224).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import webdataset as wds
from PIL import Image

BEHAV_COLUMNS = 17


@dataclass
class Release:
    """What a written release folder holds, for the tests to compare the reader against."""

    root: Path
    betas: dict[int, np.ndarray] = field(default_factory=dict)  # subject -> (n_trials, n_voxels)
    behav: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # subject -> folder -> (n, 17)
    images: np.ndarray | None = None
    n_images: int = 0


def _behav_rows(subject: int, image_ids: np.ndarray, trial: np.ndarray, per_session: int) -> np.ndarray:
    rows = np.zeros((len(trial), BEHAV_COLUMNS), dtype=np.float32)
    rows[:, 0] = image_ids[trial]  # 73k image id
    rows[:, 1] = subject
    rows[:, 2] = trial // per_session + 1  # session (1-based)
    rows[:, 3] = (trial % per_session) // 10 + 1  # run
    rows[:, 4] = trial % 10  # trial in run
    rows[:, 5] = trial  # global trial index = row of the betas
    rows[:, 6:] = np.random.default_rng(int(trial.sum())).random((len(trial), BEHAV_COLUMNS - 6))
    return rows


def _write_shard(path: Path, behav: np.ndarray, first_key: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for k, row in enumerate(behav):
            one = row[None, :].astype(np.float32)
            sink.write({
                "__key__": f"sample{first_key + k:09d}",
                "behav.npy": one,
                "past_behav.npy": np.full((15, BEHAV_COLUMNS), np.nan, dtype=np.float32),
                "future_behav.npy": np.full((15, BEHAV_COLUMNS), np.nan, dtype=np.float32),
                "olds_behav.npy": np.full((15, BEHAV_COLUMNS), np.nan, dtype=np.float32),
            })


def write_mindeye2_release(
    root: Path,
    subjects: tuple[int, ...] = (1,),
    sessions: int = 3,
    per_session: int = 30,
    n_voxels: int = 40,
    n_images: int = 120,
    n_shared: int = 10,
    image_size: int = 64,
    seed: int = 0,
    new_test: bool = True,
    with_images: bool = True,
) -> Release:
    """A folder shaped like the MindEye2 release: betas HDF5, wds/subjNN/{train,test,new_test}/*.tar, images.

    Shared images (ids 0..n_shared-1) are shown 3 times each and are the test set; the others once or twice.
    ``test/`` holds the shared trials of every session but the last (the older, smaller test set);
    ``new_test/`` holds all of them.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    release = Release(root=root, n_images=n_images)
    n_trials = sessions * per_session
    shared = np.zeros(73000, dtype=bool)
    shared[:n_shared] = True
    np.save(root / "shared1000.npy", shared)
    for subject in subjects:
        shown = np.concatenate([np.repeat(np.arange(n_shared), 3)])
        rest = rng.choice(np.arange(n_shared, n_images), n_trials - len(shown), replace=True)
        image_ids = rng.permutation(np.concatenate([shown, rest]))  # image shown at each trial, in order
        betas = rng.standard_normal((n_trials, n_voxels)).astype(np.float32)
        with h5py.File(root / f"betas_all_subj{subject:02d}_fp32_renorm.hdf5", "w") as f:
            f.create_dataset("betas", data=betas)
        release.betas[subject] = betas
        trial = np.arange(n_trials)
        is_test = image_ids < n_shared
        folder = root / "wds" / f"subj{subject:02d}"
        behav: dict[str, np.ndarray] = {"train": np.empty((0, BEHAV_COLUMNS)), "test": None, "new_test": None}
        parts = []
        for session in range(sessions):
            in_session = trial[(trial // per_session == session) & ~is_test]
            rows = _behav_rows(subject, image_ids, in_session, per_session)
            _write_shard(folder / "train" / f"{session}.tar", rows, session * per_session)
            parts.append(rows)
        behav["train"] = np.concatenate(parts)
        old = trial[is_test & (trial // per_session < sessions - 1)]
        behav["test"] = _behav_rows(subject, image_ids, old, per_session)
        _write_shard(folder / "test" / "0.tar", behav["test"], 0)
        if new_test:
            behav["new_test"] = _behav_rows(subject, image_ids, trial[is_test], per_session)
            _write_shard(folder / "new_test" / "0.tar", behav["new_test"], 0)
        release.behav[subject] = {k: v for k, v in behav.items() if v is not None}
    if with_images:
        images = rng.random((n_images, 3, image_size, image_size)).astype(np.float16)
        with h5py.File(root / "coco_images_224_float16.hdf5", "w") as f:
            f.create_dataset("images", data=images)
        release.images = images
    with h5py.File(root / "COCO_73k_subj_indices.hdf5", "w") as f:
        for subject in subjects:
            f.create_dataset(f"subj{subject:02d}", data=np.arange(n_images, dtype=np.int64))
    return release


def jpeg_bytes(rng: np.random.Generator, size: int = 16) -> tuple[bytes, np.ndarray]:
    """A random RGB JPEG (Pillow) and the pixels Pillow decodes it to."""
    pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return data, decoded
