"""Generic Object Decoding (Horikawa & Kamitani 2017) from bdpy BData files, real or simulated.

One ``Subject{N}.h5`` per subject. Voxels: the ROI key (``ROI_VC`` by default) intersected with
``VoxelData``. Splits by ``DataType``: 1 train, 2 test (perception), 3 imagery. Stimulus id: the
``image_index`` column when present, else ``stimulus_id`` (GOD's float ids, e.g. 1518415.012004, become
the stable integer round(id * 1e6)). Category: from ``stimuli.hdf5`` beside the files when it has
``category``, else the integer part of ``Label`` (the WordNet synset number in GOD). Trials keep one row per
trial; the harness averages test repeats per image.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from brainbench.errors import DataError
from brainbench.interfaces import Dataset, Trials
from brainbench.options import Option, Options, declares
from brainbench.rows import read_rows

from .bdata import BDataFile

SPLIT_CODES = {"train": 1, "test": 2, "imagery": 3}
STIMULI_FILE = "stimuli.hdf5"
CLASS_NAME_FILES = ("class_names.json", "class_names.csv")
_SUBJECT_FILE = re.compile(r"subject_?0*(\d+)", re.IGNORECASE)


@dataclass
class _Subject:
    bdata: BDataFile
    voxel_columns: np.ndarray
    data_type: np.ndarray  # (n_samples,) int
    stimulus_ids: np.ndarray  # (n_samples,) int64
    labels: np.ndarray | None  # (n_samples,) float: GOD's Label column
    runs: np.ndarray | None


def subject_files(root: Path) -> dict[int, Path]:
    """``Subject{N}.h5`` files in a folder (or one file), keyed by subject number."""
    root = Path(root)
    if root.is_file():
        match = _SUBJECT_FILE.search(root.stem)
        return {int(match.group(1)) if match else 1: root}
    if not root.is_dir():
        raise DataError(f"GOD data path {root} does not exist (expected a folder of Subject{{N}}.h5 or one file)")
    files = {}
    for path in sorted(root.glob("*.h5")):
        match = _SUBJECT_FILE.search(path.stem)
        if match:
            files[int(match.group(1))] = path
    if not files:
        raise DataError(f"no Subject{{N}}.h5 BData files in {root}")
    return files


def _stimulus_ids(values: np.ndarray, integral: bool) -> np.ndarray:
    return np.rint(values if integral else values * 1e6).astype(np.int64)


def read_class_names(path: Path) -> dict[str, str]:
    """label -> name from JSON ({"1518415": "ostrich"}) or CSV (rows ``label,name``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class-name file {path} does not exist")
    if path.suffix.lower() == ".json":
        mapping = json.loads(path.read_text())
        if not isinstance(mapping, dict):
            raise DataError(f"{path}: expected a JSON object mapping label -> class name")
        return {str(k): str(v) for k, v in mapping.items()}
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("label", "category", "synset"):
        rows = rows[1:]
    if any(len(row) < 2 for row in rows):
        raise DataError(f"{path}: every CSV row needs two columns, label and name")
    return {row[0].strip(): row[1].strip() for row in rows}


def _label_key_variants(category_id: int) -> tuple[str, ...]:
    return (str(category_id), f"n{category_id:08d}", f"{category_id:08d}")


class GodDataset(Dataset):
    """GOD subjects from BData files; category labels and names; stimuli file optional."""

    def __init__(
        self,
        files: dict[int, Path],
        roi: str = "ROI_VC",
        stimuli: Path | None = None,
        class_names: Path | None = None,
        synthetic: bool = False,
        name: str = "god",
        prepare: Callable[[int], Path] | None = None,
    ) -> None:
        """``prepare(subject)``, when given, writes a subject's file on first use (the simulator): ``files``
        then names the subjects that can be asked for, and nothing is opened until one is."""
        self.name = name
        self._prepare = prepare
        self._subject_list = sorted(files)
        self.roi = roi
        self.stimuli_path = stimuli if stimuli is not None and Path(stimuli).is_file() else None
        if not synthetic and self.stimuli_path is not None:  # the simulator marks its stimuli file
            with h5py.File(self.stimuli_path, "r") as h5:
                synthetic = bool(h5.attrs.get("synthetic", False))
        self.synthetic = synthetic
        self.default_target = "synthetic-clip" if synthetic else "clip-vit-l-14"
        opened = {} if prepare is not None else files
        self._subjects = {number: self._open_subject(path) for number, path in sorted(opened.items())}
        self._synsets: np.ndarray | None = None  # category ids from Label, when categories come from there
        self._stimulus_category = self._categories_by_stimulus()
        self._names = self._read_names(class_names)

    # -- opening

    def _open_subject(self, path: Path) -> _Subject:
        bdata = BDataFile.open(path)
        for key in ("VoxelData", "DataType"):
            if not bdata.has(key):
                raise DataError(f"{path}: metadata key {key!r} is missing; keys: {', '.join(bdata.keys)}")
        if not bdata.has(self.roi):
            raise DataError(
                f"{path}: ROI key {self.roi!r} not found; ROI keys present: {', '.join(bdata.roi_keys()) or 'none'}"
            )
        voxel_columns = np.intersect1d(bdata.columns(self.roi), bdata.columns("VoxelData"))
        if len(voxel_columns) == 0:
            raise DataError(f"{path}: ROI {self.roi!r} marks no VoxelData columns")
        id_key = "image_index" if bdata.has("image_index") else "stimulus_id"
        if not bdata.has(id_key):
            raise DataError(f"{path}: needs an 'image_index' or 'stimulus_id' column to identify stimuli")
        raw_ids = bdata.column(id_key)
        if not np.isfinite(raw_ids).all():
            raise DataError(f"{path}: column {id_key!r} has NaN or infinite stimulus ids")
        integral = id_key == "image_index" or bool(np.all(raw_ids == np.round(raw_ids)))
        return _Subject(
            bdata=bdata,
            voxel_columns=voxel_columns,
            data_type=np.rint(bdata.column("DataType")).astype(np.int64),
            stimulus_ids=_stimulus_ids(raw_ids, integral),
            labels=bdata.column("Label") if bdata.has("Label") else None,
            runs=np.rint(bdata.column("Run")).astype(np.int64) if bdata.has("Run") else None,
        )

    def _categories_by_stimulus(self) -> dict[int, int] | None:
        """stimulus id -> category index, from stimuli.hdf5 or else from the integer part of Label."""
        if self.stimuli_path is not None:
            with h5py.File(self.stimuli_path, "r") as h5:
                if "category" in h5:
                    category = np.asarray(h5["category"][()], dtype=np.int64)
                    return {int(i): int(c) for i, c in enumerate(category)}
        if any(s.labels is None for s in self._subjects.values()):
            return None
        synsets = np.unique(np.concatenate([np.floor(s.labels) for s in self._subjects.values()]).astype(np.int64))
        self._synsets = synsets
        mapping: dict[int, int] = {}
        for subject in self._subjects.values():
            index = np.searchsorted(synsets, np.floor(subject.labels).astype(np.int64))
            mapping.update(zip(subject.stimulus_ids.tolist(), index.tolist(), strict=True))
        return mapping

    def _read_names(self, class_names: Path | None) -> list[str] | None:
        if self.stimuli_path is not None:
            with h5py.File(self.stimuli_path, "r") as h5:
                if "category_names" in h5:
                    return [n.decode() if isinstance(n, bytes) else str(n) for n in h5["category_names"][()]]
        if self._stimulus_category is None:
            return None
        synsets = self._synsets
        if synsets is None:
            return None
        given = read_class_names(class_names) if class_names is not None else {}
        value_map = {}
        for subject in self._subjects.values():  # bdpy's value map, when it names whole categories
            value_map.update({k: v for k, v in subject.bdata.value_map("Label").items() if k == int(k)})
        names = []
        for synset in synsets.tolist():
            found = next((given[k] for k in _label_key_variants(synset) if k in given), None)
            found = found if found is not None else value_map.get(float(synset))
            names.append(found if found is not None else f"n{synset:08d}")
        return names

    # -- Dataset interface

    def subjects(self) -> list[int]:
        return list(self._subject_list)

    def _subject(self, subject: int) -> _Subject:
        if subject not in self._subjects and self._prepare is not None and subject in self._subject_list:
            self._subjects[subject] = self._open_subject(self._prepare(subject))
        if subject not in self._subjects:
            raise DataError(f"{self.name}: no subject {subject}; subjects: {self.subjects()}")
        return self._subjects[subject]

    def n_voxels(self, subject: int) -> int:
        return len(self._subject(subject).voxel_columns)

    def splits(self) -> list[str]:
        if self._prepare is not None and not self._subjects:  # the simulator writes every split
            return list(SPLIT_CODES)
        present = set(np.concatenate([s.data_type for s in self._subjects.values()]).tolist())
        return [split for split, code in SPLIT_CODES.items() if code in present]

    def trials(self, subject: int, split: str) -> Trials:
        if split not in SPLIT_CODES:
            raise DataError(f"{self.name}: unknown split {split!r}; splits: {', '.join(SPLIT_CODES)}")
        record = self._subject(subject)
        rows = np.flatnonzero(record.data_type == SPLIT_CODES[split])
        if len(rows) == 0:
            raise DataError(f"{record.bdata.path}: no samples with DataType={SPLIT_CODES[split]} ({split})")
        voxels = record.bdata.read(rows, record.voxel_columns)
        if not np.isfinite(voxels).all():
            bad = int((~np.isfinite(voxels)).sum())
            raise DataError(f"{record.bdata.path}: {bad} NaN or infinite voxel values in split {split!r}")
        sessions = None if record.runs is None else record.runs[rows]
        return Trials(voxels, record.stimulus_ids[rows], sessions)

    def categories(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        if self._stimulus_category is None:
            return None
        try:
            return np.array([self._stimulus_category[int(i)] for i in np.asarray(stimulus_ids)], dtype=np.int64)
        except KeyError as error:
            raise DataError(f"{self.name}: stimulus id {error.args[0]} has no known category") from None

    def category_names(self) -> list[str] | None:
        return None if self._names is None else list(self._names)

    def all_stimulus_ids(self) -> np.ndarray:
        """Every stimulus with a known category (all images of the stimuli file when there is one)."""
        if self._stimulus_category is not None:
            return np.array(sorted(self._stimulus_category), dtype=np.int64)
        return np.unique(np.concatenate([s.stimulus_ids for s in self._subjects.values()]))

    def _stimuli_array(self, key: str) -> np.ndarray | None:
        if self.stimuli_path is None:
            return None
        with h5py.File(self.stimuli_path, "r") as h5:
            return np.asarray(h5[key][()]) if key in h5 else None

    def stored_embeddings(self, key: str) -> np.ndarray | None:
        """Embeddings from stimuli.hdf5 by name ("clip-pooled" -> ``clip_pooled``), indexed by image_index."""
        array = self._stimuli_array(key.replace("-", "_"))
        return None if array is None else array.astype(np.float32)

    def stored_text_embeddings(self, texts: Sequence[str]) -> np.ndarray | None:
        """Stored class embeddings (mean over their templates, renormalised) for class names or prompts.

        A text that is not itself a class name maps to the longest class name it contains, so prompts such
        as "a photo of a goldfish." find the stored embedding of "goldfish".
        """
        stored = self._stimuli_array("text_embeddings")
        if stored is None or self._names is None:
            return None
        per_class = stored.mean(axis=1) if stored.ndim == 3 else stored
        per_class = per_class / np.linalg.norm(per_class, axis=-1, keepdims=True)
        by_length = sorted(range(len(self._names)), key=lambda i: -len(self._names[i]))
        rows = []
        for text in texts:
            lowered = text.lower()
            if text in self._names:
                rows.append(self._names.index(text))
                continue
            match = next(
                (i for i in by_length if re.search(rf"\b{re.escape(self._names[i].lower())}\b", lowered)), None
            )
            if match is None:
                return None
            rows.append(match)
        return per_class[rows].astype(np.float32)

    def images(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        if self.stimuli_path is None:
            return None
        with h5py.File(self.stimuli_path, "r") as h5:
            if "images" not in h5:
                return None
            return read_rows(h5["images"], stimulus_ids)

    def file_details(self) -> list[dict[str, Any]]:
        """BData keys, ROI keys and DataType counts of each subject file (for ``brainbench data inspect``)."""
        details = []
        for subject, record in self._subjects.items():
            bdata = record.bdata
            codes, counts = np.unique(np.rint(bdata.column("DataType")).astype(int), return_counts=True)
            details.append({
                "subject": subject,
                "file": str(bdata.path),
                "shape": list(bdata.shape),
                "keys": [k for k in bdata.keys if not k.startswith("ROI_")],
                "rois": {k: len(bdata.columns(k)) for k in bdata.roi_keys()},
                "data_type_counts": {int(c): int(n) for c, n in zip(codes, counts, strict=True)},
            })
        return details

    def describe(self) -> dict[str, Any]:
        counts = {}
        for number, record in self._subjects.items():
            counts[number] = {
                "voxels": len(record.voxel_columns),
                **{split: int((record.data_type == code).sum()) for split, code in SPLIT_CODES.items()},
            }
        return {
            **super().describe(),
            "layout": "bdpy BData",
            "roi": self.roi,
            "splits": self.splits(),
            "trials": counts,
            "categories": None if self._names is None else len(self._names),
            "stimuli_file": str(self.stimuli_path) if self.stimuli_path else None,
        }


# The openers' options, declared once (the registry, `brainbench info` and preflight read them).
GOD_OPTIONS = Options(
    Option("subjects", list, None, "subjects to open (default: every Subject{N}.h5)", item=int, minimum=1,
           nullable=True),
    Option("roi", str, "ROI_VC", "BData region-of-interest column selecting the voxels"),
    Option("class_names", str, None, "class-name file (default: found beside the data)", nullable=True),
)
SYNTHETIC_GOD_OPTIONS = Options(
    Option("seed", int, 0, "simulator seed", minimum=0, maximum=2**32 - 1),
    Option("scale", str, "small", "simulated size", choices=("small", "tiny")),
    Option("subjects", list, None, "subjects offered (each written when first used)", item=int, minimum=1,
           nullable=True),
    Option("roi", str, "ROI_VC", "BData region-of-interest column selecting the voxels"),
)


@declares(GOD_OPTIONS)
def open_god(
    root: str | Path | None,
    subjects: Sequence[int] | None = None,
    roi: str = "ROI_VC",
    class_names: str | Path | None = None,
) -> GodDataset:
    """GOD from a folder of ``Subject{N}.h5`` files (or one file); stimuli.hdf5 / class names beside."""
    if root is None:
        raise DataError("the god dataset needs a data path: a folder of Subject{N}.h5 BData files or one file")
    root = Path(root).expanduser()
    files = subject_files(root)
    if subjects is not None:
        missing = sorted(set(subjects) - set(files))
        if missing:
            raise DataError(f"{root}: no BData file for subject(s) {missing}; found subjects {sorted(files)}")
        files = {s: files[s] for s in subjects}
    folder = root if root.is_dir() else root.parent
    if class_names is None:
        class_names = next((folder / n for n in CLASS_NAME_FILES if (folder / n).is_file()), None)
    names_path = Path(class_names) if class_names is not None else None
    return GodDataset(files, roi=roi, stimuli=folder / STIMULI_FILE, class_names=names_path)


@declares(SYNTHETIC_GOD_OPTIONS)
def open_synthetic_god(
    root: str | Path | None = None,
    seed: int = 0,
    scale: str = "small",
    subjects: Sequence[int] | None = None,
    roi: str = "ROI_VC",
) -> GodDataset:
    """The simulator's GOD-like data (written on first use) in the BData layout."""
    from brainbench.paths import synthetic_root

    try:
        from brainbench.simulate.god import GENERATOR_VERSION, subject_file, write_one_subject, write_synthetic_god
    except ImportError as error:
        raise DataError(f"the GOD simulator is not available ({error})") from None
    # The generator version is part of the cached folder's name, so changed data never mix with old files.
    folder = Path(root) if root is not None else synthetic_root("god", f"{scale}-v{GENERATOR_VERSION}", seed)
    write_synthetic_god(folder, seed=seed, subjects=(), scale=scale)  # the stimuli file only
    prepare = partial(write_one_subject, folder, seed, scale)  # a subject's file is written on its first use
    wanted = list(subjects) if subjects is not None else [1, 2, 3, 4, 5]
    files = {s: subject_file(folder, s) for s in wanted}
    dataset = GodDataset(
        files, roi=roi, stimuli=folder / STIMULI_FILE, synthetic=True, name="synthetic-god", prepare=prepare
    )
    dataset.demo_scale = True  # GOD is small: 1200 training trials per subject
    return dataset
