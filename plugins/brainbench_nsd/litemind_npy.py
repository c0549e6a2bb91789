"""NSD as Lite-Mind's numpy files, memory-mapped.

Per subject ``subjNN``, in one folder (the root or any folder below it):
- ``subjNN_nsdgeneral_betas_tr.npy``: single-trial training betas, (n_trials, n_voxels) float.
- ``subjNN_stims_tr.npy``: (n_trials,) int, the NSD 73k image index of each training row.
- ``subjNN_nsdgeneral_betas_ave_te.npy``: per-image test averages, (n_images, n_voxels) float (the name the
  Lite-Mind reference writes; the older ``subjNN_betas_ave_te.npy`` is read when that is absent).
- ``subjNN_stims_te.npy``: (n_images,) int, the 73k image index of each test row.
Optional, beside the betas or in the root: ``clip_pooled.npy`` (n, 768) float image features whose row r is
the image with 73k index r; exposed as ``stored_embeddings("clip-pooled")``.

Lite-Mind itself keeps the image indices and features under other names; save or link them under these.
The test split is already one row per image (repeats averaged before the model, as Lite-Mind does).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.constants import EMBEDDING_POOLED, EMBEDDING_TOKENS
from brainbench.errors import DataError
from brainbench.interfaces import ArrayLike, Dataset, Trials
from brainbench.repeats import group_mean
from brainbench_nsd.h5rows import RowView
from brainbench_nsd.marker import is_synthetic, mark_synthetic

BETAS_PATTERN = re.compile(r"subj0*(\d+)_nsdgeneral_betas_tr\.npy$")
FEATURES_FILE = "clip_pooled.npy"
#: What brainbench read before it followed the reference's name; still accepted.
LEGACY_TEST_BETAS = "subj{subject:02d}_betas_ave_te.npy"
EMBED_DIM = 768


def litemind_names(subject: int) -> dict[str, str]:
    """The four file names of one subject, keyed by (split, role)."""
    stem = f"subj{subject:02d}"
    return {
        "train_betas": f"{stem}_nsdgeneral_betas_tr.npy",
        "train_stims": f"{stem}_stims_tr.npy",
        "test_betas": f"{stem}_nsdgeneral_betas_ave_te.npy",
        "test_stims": f"{stem}_stims_te.npy",
    }


NAMING = (
    "Lite-Mind layout: per subject subjNN_nsdgeneral_betas_tr.npy (n_trials, n_voxels), subjNN_stims_tr.npy "
    "(n_trials,) 73k image index per training row, subjNN_nsdgeneral_betas_ave_te.npy (n_images, n_voxels), "
    "subjNN_stims_te.npy (n_images,)"
)


def load_npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: file not found; {NAMING}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from None


def load_stims(path: Path, n_rows: int, betas: Path) -> np.ndarray:
    stims = np.asarray(load_npy(path))
    if stims.ndim == 2 and stims.shape[1] == 1:
        stims = stims[:, 0]
    if stims.shape != (n_rows,):
        raise DataError(
            f"{path}: shape {stims.shape}; expected ({n_rows},), one 73k image index per row of {betas.name}"
        )
    if not np.isfinite(stims).all() or (stims < 0).any() or (stims != np.round(stims)).any():
        raise DataError(f"{path}: image indices must be non-negative integers (NSD 73k ids)")
    return stims.astype(np.int64)


class LiteMindNsd(Dataset):
    """NSD from Lite-Mind's ``.npy`` files (see the module docstring)."""

    default_target = "clip-vit-l-14"
    token_target = "clip-vit-l-14-tokens"

    def __init__(self, root: Path, name: str = "nsd") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: NSD folder not found")
        self.name = name
        self.synthetic = is_synthetic(self.root)  # rewritten from simulated data: still synthetic
        self._folders: dict[int, Path] = {}
        for path in sorted(self.root.rglob("*_nsdgeneral_betas_tr.npy")):
            match = BETAS_PATTERN.search(path.name)
            if match:
                self._folders.setdefault(int(match.group(1)), path.parent)
        if not self._folders:
            raise DataError(f"{self.root}: no subjNN_nsdgeneral_betas_tr.npy found; {NAMING}")
        self._arrays: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, Path]] = {}

    def subjects(self) -> list[int]:
        return sorted(self._folders)

    def _split(self, subject: int, split: str) -> tuple[np.ndarray, np.ndarray, Path]:
        """(betas memmap, stimulus ids, betas path), checked against each other and the training voxels."""
        if subject not in self._folders:
            raise DataError(f"{self.root}: no subject {subject}; found {self.subjects()}; {NAMING}")
        if split not in ("train", "test"):
            raise DataError(f"NSD has splits 'train' and 'test', not {split!r}")
        if (subject, split) not in self._arrays:
            folder, names = self._folders[subject], litemind_names(subject)
            path = folder / names[f"{split}_betas"]
            legacy = folder / LEGACY_TEST_BETAS.format(subject=subject)
            if split == "test" and not path.exists() and legacy.exists():
                path = legacy
            betas = load_npy(path)
            if betas.ndim != 2:
                rows = "n_trials" if split == "train" else "n_images"
                raise DataError(f"{path}: shape {betas.shape}; expected ({rows}, n_voxels)")
            if split == "test" and betas.shape[1] != self.n_voxels(subject):
                train = folder / names["train_betas"]
                raise DataError(
                    f"{path}: shape {betas.shape}; expected (n_images, {self.n_voxels(subject)}), "
                    f"the voxels of {train.name}"
                )
            stims = load_stims(folder / names[f"{split}_stims"], betas.shape[0], path)
            self._arrays[(subject, split)] = (betas, stims, path)
        return self._arrays[(subject, split)]

    def n_voxels(self, subject: int) -> int:
        return int(self._split(subject, "train")[0].shape[1])

    def trials(self, subject: int, split: str) -> Trials:
        betas, stims, path = self._split(subject, split)
        return Trials(RowView(betas, np.arange(len(stims)), str(path), "betas"), stims)

    def stored_embeddings(self, key: str) -> ArrayLike | None:
        if key == EMBEDDING_TOKENS:
            return None
        if key != EMBEDDING_POOLED:
            raise DataError(f"unknown stored embedding {key!r}; known: clip-pooled, clip-tokens")
        folders = [*dict.fromkeys(self._folders.values()), self.root]
        path = next((f / FEATURES_FILE for f in folders if (f / FEATURES_FILE).exists()), None)
        if path is None:
            return None
        features = load_npy(path)
        if features.ndim != 2 or features.shape[1] != EMBED_DIM:
            raise DataError(
                f"{path}: shape {features.shape}; expected (n_images, {EMBED_DIM}), row r = 73k image index r"
            )
        return features

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "synthetic": self.synthetic,
            "layout": "litemind",
            "root": str(self.root),
            "subjects": self.subjects(),
            "test_rows": "per-image averages",
            "images": "absent (Lite-Mind's files hold no images)",
            "missing": self._missing(),
        }

    def _missing(self) -> list[str]:
        """Absent parts, in the user's words: every subject's four files, then the image features."""
        missing = []
        for subject, folder in self._folders.items():
            for name in litemind_names(subject).values():
                legacy = folder / LEGACY_TEST_BETAS.format(subject=subject)
                if not (folder / name).exists() and not (name.endswith("_ave_te.npy") and legacy.exists()):
                    missing.append(f"subject {subject}: {name}")
        if self.stored_embeddings("clip-pooled") is None:
            missing.append(
                f"{FEATURES_FILE}: no image features stored and no images, so targets must come from a cache "
                "built where the images are (`brainbench targets build`)"
            )
        return missing


def write_litemind_files(
    root: Path, subject: int, train: Trials, test: Trials, features: np.ndarray | None = None,
    synthetic: bool = False,
) -> list[Path]:
    """Write one subject in the Lite-Mind layout; test trials are averaged per image first.

    ``synthetic=True`` (trials from the simulator) leaves the marker that keeps them labelled synthetic.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if synthetic:
        mark_synthetic(root, "write_litemind_files")
    names = litemind_names(subject)
    test_means, test_ids = group_mean(test.load(), test.stimulus_ids)
    arrays = {
        "train_betas": train.load(),
        "train_stims": train.stimulus_ids,
        "test_betas": test_means,
        "test_stims": test_ids,
    }
    written = []
    for role, array in arrays.items():
        np.save(root / names[role], array)
        written.append(root / names[role])
    if features is not None:
        np.save(root / FEATURES_FILE, np.asarray(features, dtype=np.float32))
        written.append(root / FEATURES_FILE)
    return written
