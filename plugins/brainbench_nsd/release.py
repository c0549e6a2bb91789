"""The MindEye2 public release's trial lists: ``behav.npy`` arrays in webdataset shards, read with ``tarfile``
(as ``mindeye1.py`` reads its shards, grouping members by the same key rule; ``import webdataset`` imports torch).

Layout (``root`` holds the betas files):
- ``wds/subjNN/train/K.tar`` (one shard per session), ``wds/subjNN/test/0.tar`` and ``wds/subjNN/new_test/0.tar``
  (MindEye2 evaluates on ``new_test``).
- Each sample's ``behav.npy`` is (1, 17) float: column 0 the NSD 73k image id, 2 the session, 5 the global
  trial index into ``betas_all_subjNN_fp32_renorm.hdf5``. ``past_behav.npy``, ``future_behav.npy`` and
  ``olds_behav.npy`` (other timepoints and repetitions) are not needed and not read.

MindEye2's own loader indexes ``betas[behav[:, 0, 5]]`` and ``images[behav[:, 0, 0]]``; so does this reader.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np

from brainbench.errors import DataError
from brainbench_nsd.mindeye1 import _sample_key, load_npy

BEHAV_FIELD = "behav.npy"
BEHAV_COLUMNS = 17
IMAGE_COLUMN, SESSION_COLUMN, TRIAL_COLUMN = 0, 2, 5
#: The release's shard folders per subject; ``new_test`` is MindEye2's test set, ``test`` the older one.
RELEASE_SPLITS = ("train", "test", "new_test")
TEST_SPLITS = ("auto", "new_test", "test")
_NUMBER = re.compile(r"(\d+)")


def wds_folder(root: Path, subject: int) -> Path:
    return Path(root) / "wds" / f"subj{subject:02d}"


def release_shards(root: Path, subject: int) -> dict[str, list[Path]]:
    """The subject's shards per release folder (train, test, new_test), each in shard-number order."""

    def number(path: Path) -> tuple[int, str]:
        found = _NUMBER.findall(path.stem)
        return (int(found[-1]) if found else -1, path.name)

    folder = wds_folder(root, subject)
    return {split: sorted((folder / split).glob("*.tar"), key=number) for split in RELEASE_SPLITS}


def release_subjects(root: Path) -> list[int]:
    """Subjects with a ``wds/subjNN`` folder holding shards."""
    wds = Path(root) / "wds"
    if not wds.is_dir():
        return []
    found = []
    for folder in wds.iterdir():
        match = re.fullmatch(r"subj0*(\d+)", folder.name)
        if match and folder.is_dir() and any(folder.glob("*/*.tar")):
            found.append(int(match.group(1)))
    return sorted(found)


def chosen_test_split(shards: dict[str, list[Path]], test_split: str, where: Path) -> str:
    """``new_test`` when present (MindEye2's), else ``test``; or the one asked for, which must exist."""
    if test_split not in TEST_SPLITS:
        raise DataError(f"test_split must be one of {', '.join(TEST_SPLITS)}, got {test_split!r}")
    if test_split == "auto":
        test_split = "new_test" if shards["new_test"] else "test"
    if not shards[test_split]:
        raise DataError(f"{where / test_split}: no *.tar shards (test_split={test_split!r})")
    return test_split


def read_behav(path: Path) -> np.ndarray:
    """The (n_samples, 17) ``behav`` rows of one shard, in the shard's order."""
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{path}: not a readable tar shard ({err})") from None
    rows, keys = [], set()
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            key, field = _sample_key(member.name)
            keys.add(key)
            if field != BEHAV_FIELD:
                continue
            extracted = tar.extractfile(member)
            behav = load_npy(extracted.read() if extracted else b"", f"{path}: member {member.name}")
            if behav.ndim not in (1, 2) or behav.reshape(-1).size != BEHAV_COLUMNS:
                raise DataError(
                    f"{path}: member {member.name} has shape {behav.shape}; expected (1, {BEHAV_COLUMNS}) "
                    "(column 0 the 73k image id, column 5 the trial index into the betas)"
                )
            rows.append(behav.reshape(BEHAV_COLUMNS).astype(np.float64))
    if len(rows) != len(keys):
        raise DataError(f"{path}: {len(keys) - len(rows)} of {len(keys)} samples have no {BEHAV_FIELD}")
    if not rows:
        raise DataError(f"{path}: no samples (expected members KEY.{BEHAV_FIELD})")
    return np.stack(rows)


def _integers(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    if not np.isfinite(values).all() or (values < 0).any() or (values != np.round(values)).any():
        raise DataError(f"{path}: {what} in {BEHAV_FIELD} must be non-negative integers")
    return values.astype(np.int64)


def release_table(root: Path, subject: int, test_split: str = "auto") -> dict[str, np.ndarray | str]:
    """The subject's trial table (image_index, trial_index, session, split) from the release's shards."""
    shards = release_shards(root, subject)
    folder = wds_folder(root, subject)
    if not shards["train"]:
        raise DataError(f"{folder / 'train'}: no *.tar shards (the MindEye2 release has one per session)")
    test_folder = chosen_test_split(shards, test_split, folder)
    parts = {"train": shards["train"], "test": shards[test_folder]}
    columns: dict[str, list[np.ndarray]] = {"image_index": [], "trial_index": [], "session": [], "split": []}
    for split, paths in parts.items():
        for path in paths:
            behav = read_behav(path)
            columns["image_index"].append(_integers(behav[:, IMAGE_COLUMN], "column 0 (73k image id)", path))
            columns["trial_index"].append(_integers(behav[:, TRIAL_COLUMN], "column 5 (trial index)", path))
            columns["session"].append(_integers(behav[:, SESSION_COLUMN], "column 2 (session)", path))
            columns["split"].append(np.full(len(behav), split))
    table: dict[str, np.ndarray | str] = {k: np.concatenate(v) for k, v in columns.items()}
    table["test_folder"] = test_folder
    for split in parts:  # a trial listed twice in one split would be trained or tested on twice
        trial = table["trial_index"][table["split"] == split]
        unique, counts = np.unique(trial, return_counts=True)
        if (counts > 1).any():
            name = split if split == "train" else test_folder
            raise DataError(
                f"{folder / name}: trial index {int(unique[counts > 1][0])} (behav column 5) is in "
                f"{int(counts.max())} samples; each trial must appear once per split"
            )
    return table
