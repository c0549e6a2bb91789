"""NSD datasets: the MindEye2 HDF5 layout (the public release and the simulator), plus layout detection.

``open_nsd`` also reads MindEye1 webdataset shards (``mindeye1.py``) and Lite-Mind's numpy files
(``litemind_npy.py``), detected from what is on disk or named with ``layout=``.

MindEye2 layout in one folder, as the public release ships it:
- ``betas_all_subj01_fp32_renorm.hdf5``: ``betas`` (n_trials, n_voxels) float32, one file per subject.
- which trial shows which image: the release's webdataset shards ``wds/subj01/{train,test,new_test}/*.tar``
  (``behav.npy`` per sample: column 0 the 73k image id, column 5 the row of the betas; ``release.py``).
  The test split is ``new_test`` (MindEye2's) when present, else ``test``; ``test_split=`` picks one.
  Without shards, a plain trial table ``trials_subj01.csv`` (columns ``image_index,trial_index,session,split``,
  ``session`` optional, ``split`` ``train`` or ``test``) is read instead; the simulator writes that.
- ``coco_images_224_float16.hdf5`` (``images`` (73000, 3, 224, 224), row = 73k id), ``shared1000.npy``
  (bool over the 73k ids) and ``COCO_73k_subj_indices.hdf5``; all optional for reading the betas.
- brainbench's own optional ``clip_targets.hdf5`` (``pooled`` (n_images, 768), ``tokens`` (n_images, 257,
  768), ``category``, ``category_names``); the release has none, so its runs use an open_clip target.
- brainbench's own optional ``rois_subj01.hdf5``: each betas column's label in NSD's ROI atlases (written by
  ``data prepare nsd`` and the simulator; ``rois.py``); the ``roi=`` option selects columns by it.

Betas are read lazily (the files stay open). NaN/inf betas are checked on every read of trial rows, and
in full when a betas file is first opened if it is under ``FULL_CHECK_BYTES``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from brainbench.constants import EMBEDDING_POOLED, EMBEDDING_TOKENS
from brainbench.errors import DataError
from brainbench.interfaces import ArrayLike, Dataset, Trials
from brainbench.options import Option, Options, declares
from brainbench_nsd.h5rows import RowView, check_finite
from brainbench_nsd.marker import SYNTHETIC_MARKER
from brainbench_nsd.release import release_shards, release_subjects, release_table, wds_folder

FULL_CHECK_BYTES = 64 * 2**20
BETAS_KEY = "betas"
TABLE_COLUMNS = ("image_index", "trial_index", "split")
EMBEDDING_KEYS = {EMBEDDING_POOLED: "pooled", EMBEDDING_TOKENS: "tokens"}
BETAS_PATTERN = re.compile(r"betas_all_subj(\d+)_fp32_renorm\.hdf5$")
IMAGES_FILE, SHARED_FILE = "coco_images_224_float16.hdf5", "shared1000.npy"
SUBJ_INDICES_FILE = "COCO_73k_subj_indices.hdf5"


def betas_name(subject: int) -> str:
    return f"betas_all_subj{subject:02d}_fp32_renorm.hdf5"


def table_name(subject: int) -> str:
    return f"trials_subj{subject:02d}.csv"


def read_trial_table(path: Path) -> dict[str, np.ndarray]:
    """The plain per-subject trial table (CSV, UTF-8), validated for columns, split names and non-negative
    integer indices; each problem names the table's line."""
    if not path.exists():
        raise DataError(f"{path}: trial table not found (expected CSV columns {', '.join(TABLE_COLUMNS)}, session)")
    text = _table_text(path)
    reader = csv.DictReader(text.splitlines())
    try:
        fieldnames = reader.fieldnames
        missing = [c for c in TABLE_COLUMNS if c not in (fieldnames or [])]
        if missing:
            raise DataError(f"{path}: trial table lacks column(s) {', '.join(missing)}; has {fieldnames} "
                            f"(expected a CSV header {','.join(TABLE_COLUMNS)},session)")
        rows = list(reader)
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV trial table ({err})") from None
    if not rows:
        raise DataError(f"{path}: the trial table has a header but no trials")
    columns = ["image_index", "trial_index"] + (["session"] if rows and "session" in rows[0] else [])
    table: dict[str, np.ndarray] = {}
    for column in columns:
        values = []
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            text_value = (row.get(column) or "").strip()
            try:
                value = int(text_value)
            except ValueError:
                raise DataError(f"{path}, line {line}: {column} {text_value!r} is not an integer") from None
            if value < 0 or value >= 2**63:
                raise DataError(f"{path}, line {line}: {column} {value} is out of range; {column} counts from 0")
            values.append(value)
        table[column] = np.array(values, dtype=np.int64)
    table["split"] = np.array([(r.get("split") or "").strip() for r in rows])
    bad = sorted(set(table["split"].tolist()) - {"train", "test"})
    if bad:
        raise DataError(f"{path}: column 'split' must hold 'train' or 'test', found {bad}")
    return table


def _table_text(path: Path) -> str:
    """The table's bytes as UTF-8 text; a UTF-16 or binary file is named as such."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text; the trial table is a UTF-8 CSV: save it as UTF-8")
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path}: a binary file, not a CSV trial table (columns {', '.join(TABLE_COLUMNS)})")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); the trial table is a UTF-8 CSV") from None


def check_unique_rows(table: dict[str, Any], path: Path) -> None:
    """Each betas row is one trial: two trials on one row (within a split or across train and test) mean a
    broken trial list, and across splits a test trial trained on."""
    rows, counts = np.unique(table["trial_index"], return_counts=True)
    if (counts > 1).any():
        shared = rows[counts > 1]
        first = int(shared[0])
        where = [f"{table['split'][i]} (image {int(table['image_index'][i])})"
                 for i in np.flatnonzero(table["trial_index"] == first)]
        raise DataError(
            f"{path}: {len(shared)} betas row(s) are claimed by more than one trial, e.g. row {first} by "
            f"{' and '.join(where)}; each trial must point at its own row of the betas"
        )


def _dataset(f: h5py.File, path: Path, key: str, expected: str) -> h5py.Dataset:
    """``f[key]`` as an HDF5 dataset, or a DataError saying what is there instead (nothing, a group, a link to a
    file or object that does not exist)."""
    link = f.get(key, getlink=True)
    if link is None:
        raise DataError(f"{path}: missing dataset {key!r} (expected {expected})")
    try:
        item = f[key]
    except (KeyError, OSError) as err:
        if isinstance(link, h5py.ExternalLink):
            raise DataError(f"{path}: {key!r} is an external link to {link.filename}:{link.path}, which cannot be "
                            f"opened ({err}); copy the data into the file or put the linked file in place") from None
        target = getattr(link, "path", "?")
        raise DataError(f"{path}: {key!r} is a link to {target}, which does not exist ({err})") from None
    if not isinstance(item, h5py.Dataset):
        raise DataError(f"{path}: {key!r} is an HDF5 {type(item).__name__.lower()}, not a dataset; expected {expected}")
    return item


class MindEye2Nsd(Dataset):
    """NSD in the MindEye2 layout; ``prepare(subject)`` lets the simulator write a subject on first use."""

    default_target = "clip-vit-l-14"
    token_target = "clip-vit-l-14-tokens"

    def __init__(
        self,
        root: Path,
        name: str = "nsd",
        synthetic: bool = False,
        subject_list: list[int] | None = None,
        prepare: Any = None,
        prepare_tokens: Any = None,
        test_split: str = "auto",
        roi: str = "all",
    ) -> None:
        self.root = Path(root)
        self.roi = roi.strip() or "all"
        self._columns: dict[int, np.ndarray | None] = {}
        if not self.root.is_dir():
            raise DataError(f"{self.root}: NSD folder not found")
        from brainbench_nsd.release import TEST_SPLITS

        if test_split not in TEST_SPLITS:
            raise DataError(f"test_split must be one of {', '.join(TEST_SPLITS)}, got {test_split!r}")
        self.test_split = test_split
        # Simulated data stay labelled synthetic however they are opened (the simulator leaves a marker).
        synthetic = synthetic or (self.root / SYNTHETIC_MARKER).exists()
        self.name, self.synthetic = name, synthetic
        if synthetic:
            self.default_target, self.token_target = "synthetic-clip", "synthetic-clip-tokens"
        self._subject_list = subject_list
        self._prepare, self._prepare_tokens = prepare, prepare_tokens
        self._files: dict[Path, h5py.File] = {}
        self._tables: dict[int, dict[str, Any]] = {}

    # ----------------------------------------------------------------------------- files and tables
    def _open(self, path: Path) -> h5py.File:
        if path not in self._files:
            if not path.exists():
                raise DataError(f"{path}: file not found")
            try:
                self._files[path] = h5py.File(path, "r")
            except OSError as err:
                raise DataError(f"{path}: not a readable HDF5 file ({err})") from None
        return self._files[path]

    def _betas(self, subject: int) -> h5py.Dataset:
        if self._prepare is not None:
            self._prepare(subject)
        path = self.root / betas_name(subject)
        fresh = path not in self._files
        f = self._open(path)
        ds = _dataset(f, path, BETAS_KEY, "(n_trials, n_voxels) float32")
        if ds.ndim != 2:
            raise DataError(f"{path}: dataset {BETAS_KEY!r} has shape {ds.shape}; expected (n_trials, n_voxels)")
        if 0 in ds.shape:
            raise DataError(f"{path}: dataset {BETAS_KEY!r} has shape {ds.shape}: no "
                            f"{'trials' if ds.shape[0] == 0 else 'voxels'}; expected (n_trials, n_voxels), both > 0")
        if not np.issubdtype(ds.dtype, np.number) or np.issubdtype(ds.dtype, np.complexfloating):
            raise DataError(f"{path}: dataset {BETAS_KEY!r} holds {ds.dtype} values; expected float32 betas")
        if not np.issubdtype(ds.dtype, np.floating):
            raise DataError(
                f"{path}: dataset {BETAS_KEY!r} holds {ds.dtype} values; this layout holds z-scored float betas. "
                "Integer betas are raw NSD (percent signal change x 300): prepare them with "
                "`brainbench data prepare nsd NSD_ROOT OUT --subject N`"
            )
        if fresh and ds.size * 4 <= FULL_CHECK_BYTES:
            check_finite(ds[:], str(path), BETAS_KEY, np.arange(ds.shape[0]))
        return ds

    # ---------------------------------------------------------------------------------------- ROIs
    def voxel_labels(self, subject: int) -> dict[str, Any] | None:
        """The per-voxel ROI labels of the voxels this dataset reads (``rois.Atlas`` per atlas), if stored."""
        from brainbench_nsd.rois import labels_file_name, read_voxel_labels

        n_columns = int(self._betas(subject).shape[1])  # first: the simulator writes a subject's files on use
        path = self.root / labels_file_name(subject)
        if not path.exists():
            return None
        atlases = read_voxel_labels(path, n_columns)
        columns = self._roi_columns(subject)
        if columns is None:
            return atlases
        return {name: replace(atlas, values=atlas.values[columns]) for name, atlas in atlases.items()}

    def _roi_columns(self, subject: int) -> np.ndarray | None:
        """The betas columns of ``roi`` (None: all of them), from ``rois_subjNN.hdf5``."""
        if self.roi == "all":
            return None
        if subject not in self._columns:
            from brainbench_nsd.rois import labels_file_name, read_voxel_labels, select

            n_columns = int(self._betas(subject).shape[1])  # first: the simulator writes a subject on use
            path = self.root / labels_file_name(subject)
            if not path.exists():
                raise DataError(
                    f"{path}: not found, so roi={self.roi!r} cannot be selected: these betas hold no per-voxel "
                    "ROI labels (`brainbench data prepare nsd` writes them from raw NSD, as the simulator does); "
                    "use roi=all for every voxel"
                )
            atlases = read_voxel_labels(path, n_columns)
            inside = select(self.roi, atlases, str(path))
            if not inside.any():
                raise DataError(f"{path}: roi={self.roi!r} selects no voxel of these betas")
            self._columns[subject] = np.flatnonzero(inside)
        return self._columns[subject]

    def _has_shards(self, subject: int) -> bool:
        return bool(release_shards(self.root, subject)["train"])

    def _table(self, subject: int) -> dict[str, Any]:
        if subject not in self._tables:
            betas = self._betas(subject)
            if self._has_shards(subject):  # the release's own trial lists come first
                path = wds_folder(self.root, subject)
                table = release_table(self.root, subject, self.test_split)
            else:
                path = self.root / table_name(subject)
                table = read_trial_table(path)
            check_unique_rows(table, path)
            negative = np.flatnonzero(table["trial_index"] < 0)
            if len(negative):
                raise DataError(f"{path}: trial_index {int(table['trial_index'][negative[0]])} is negative "
                                f"({len(negative)} trial(s)); it is the row of the betas, counting from 0")
            negative = np.flatnonzero(table["image_index"] < 0)
            if len(negative):
                raise DataError(f"{path}: image_index {int(table['image_index'][negative[0]])} is negative "
                                f"({len(negative)} trial(s)); it is the stimulus id, counting from 0")
            past = table["trial_index"] >= betas.shape[0]
            if past.any():
                raise DataError(
                    f"{path}: trial_index up to {int(table['trial_index'].max())} points past the betas in "
                    f"{self.root / betas_name(subject)} ({BETAS_KEY!r} has {betas.shape[0]} rows)"
                )
            for n_images, where in (self._n_stimuli(), "the target file"), (self._n_images(), IMAGES_FILE):
                if n_images is not None and len(table["image_index"]) and table["image_index"].max() >= n_images:
                    raise DataError(
                        f"{path}: image_index up to {int(table['image_index'].max())} but {where} holds "
                        f"{n_images} images"
                    )
            self._tables[subject] = table
        return self._tables[subject]

    def _targets(self) -> h5py.File | None:
        path = self.root / "clip_targets.hdf5"
        return self._open(path) if path.exists() else None

    def _n_stimuli(self) -> int | None:
        targets = self._targets()
        if targets is None or "pooled" not in targets:
            return None
        return int(targets["pooled"].shape[0])

    def _n_images(self) -> int | None:
        path = self.root / IMAGES_FILE
        if not path.exists():
            return None
        f = self._open(path)
        return int(f["images"].shape[0]) if "images" in f else None

    def _betas_subjects(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := BETAS_PATTERN.match(p.name)))

    def _has_trials(self, subject: int) -> bool:
        return self._has_shards(subject) or (self.root / table_name(subject)).exists()

    # ------------------------------------------------------------------------------------ Dataset
    def subjects(self) -> list[int]:
        if self._subject_list is not None:
            return list(self._subject_list)
        return [s for s in self._betas_subjects() if self._has_trials(s)]

    def _check_subject(self, subject: int) -> None:
        if subject not in self.subjects():
            raise DataError(
                f"{self.root}: no subject {subject} (found {self.subjects()}); expected {betas_name(subject)} "
                f"and its trial list, wds/subj{subject:02d}/train/*.tar (the release) or {table_name(subject)}"
            )

    def n_voxels(self, subject: int) -> int:
        self._check_subject(subject)
        columns = self._roi_columns(subject)
        return int(self._betas(subject).shape[1]) if columns is None else len(columns)

    def trials(self, subject: int, split: str) -> Trials:
        self._check_subject(subject)
        if split not in ("train", "test"):
            raise DataError(f"NSD has splits 'train' and 'test', not {split!r}")
        table = self._table(subject)
        mask = table["split"] == split
        order = np.argsort(table["trial_index"][mask], kind="stable")
        rows = table["trial_index"][mask][order]
        view = RowView(self._betas(subject), rows, str(self.root / betas_name(subject)), BETAS_KEY,
                       columns=self._roi_columns(subject))
        sessions = table["session"][mask][order] if "session" in table else None
        return Trials(view, table["image_index"][mask][order], sessions)

    def stored_embeddings(self, key: str) -> ArrayLike | None:
        if key not in EMBEDDING_KEYS:
            raise DataError(f"unknown stored embedding {key!r}; known: {', '.join(EMBEDDING_KEYS)}")
        name = EMBEDDING_KEYS[key]
        targets = self._targets()
        if targets is not None and name not in targets and self._prepare_tokens is not None and key == EMBEDDING_TOKENS:
            self._close(self.root / "clip_targets.hdf5")  # the generator replaces the file
            self._prepare_tokens()
            targets = self._targets()
        if targets is None or name not in targets:
            return None
        ds = targets[name]
        want = 2 if name == "pooled" else 3
        if ds.ndim != want or ds.shape[-1] != 768 or (want == 3 and ds.shape[1] != 257):
            expected = "(n_images, 768)" if want == 2 else "(n_images, 257, 768)"
            raise DataError(f"{self.root / 'clip_targets.hdf5'}: {name!r} has shape {ds.shape}; expected {expected}")
        return ds

    def categories(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        targets = self._targets()
        if targets is None or "category" not in targets:
            return None
        return np.asarray(targets["category"][:], dtype=np.int64)[np.asarray(stimulus_ids, dtype=np.int64)]

    def category_names(self) -> list[str] | None:
        targets = self._targets()
        if targets is None or "category_names" not in targets:
            return None
        return [n.decode() if isinstance(n, bytes) else str(n) for n in targets["category_names"][:]]

    def images(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        path = self.root / IMAGES_FILE
        if not path.exists():
            return None
        f = self._open(path)
        if "images" not in f or f["images"].ndim != 4 or f["images"].shape[1] != 3:
            raise DataError(f"{path}: expected dataset 'images' of shape (n_images, 3, H, W)")
        from brainbench.rows import read_rows

        return read_rows(f["images"], np.asarray(stimulus_ids, dtype=np.int64))

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "synthetic": self.synthetic, "layout": "mindeye2"}
        info["root"] = str(self.root)
        info["subjects"] = self.subjects()
        if self.roi != "all":
            info["roi"] = self.roi
        marker = self.root / SYNTHETIC_MARKER
        if marker.exists():
            meta = json.loads(marker.read_text())
            info.update({k: meta[k] for k in ("scale", "seed", "generator_version") if k in meta})
        if self._prepare is not None:  # the simulator writes subjects on first use; nothing is missing
            return info
        sources = {s: ("webdataset behav shards" if self._has_shards(s) else "trial table") for s in info["subjects"]}
        if sources:
            info["trial lists"] = ", ".join(f"subject {s}: {v}" for s, v in sources.items())
        tests = {s: self._table(s)["test_folder"] for s, v in sources.items() if v != "trial table"}
        if tests:
            info["test split from"] = ", ".join(f"wds/subj{s:02d}/{t}/" for s, t in tests.items())
        info["images"] = f"{IMAGES_FILE} ({self._n_images()} images)" if self._n_images() else "absent"
        info["missing"] = self.missing()
        return info

    def missing(self) -> list[str]:
        """What is absent, in the user's words: what each missing part is for."""
        missing = []
        betas, shards = self._betas_subjects(), release_subjects(self.root)
        for subject in betas:
            if not self._has_trials(subject):
                missing.append(
                    f"subject {subject}: {betas_name(subject)} is here but not which trial showed which image: "
                    f"expected wds/subj{subject:02d}/train/*.tar (MindEye2 release) or {table_name(subject)}"
                )
            elif self._has_shards(subject) and not release_shards(self.root, subject)["new_test"]:
                missing.append(f"subject {subject}: wds/subj{subject:02d}/new_test/ (MindEye2's test set); "
                               "testing on test/")
        for subject in sorted(set(shards) - set(betas)):
            missing.append(f"subject {subject}: wds/subj{subject:02d}/ shards but no {betas_name(subject)}")
        if not (self.root / IMAGES_FILE).exists():
            missing.append(
                f"{IMAGES_FILE}: no stimulus images, so CLIP targets cannot be computed here; use a target "
                "cache built where the images are (`brainbench targets build`)"
            )
        if not (self.root / SHARED_FILE).exists():
            missing.append(f"{SHARED_FILE} (optional): which 73k ids are the shared-1000 test images")
        return missing

    def file_details(self) -> list[dict[str, Any]] | None:
        """Per subject: betas shape, trial source, sessions; then the common files and their shapes."""
        if self._prepare is not None:
            return None
        details: list[dict[str, Any]] = []
        for subject in self.subjects():
            table = self._table(subject)
            shape = list(self._betas(subject).shape)
            row: dict[str, Any] = {"subject": subject, "betas": f"{betas_name(subject)} {shape}"}
            if "session" in table:
                row["sessions"] = len(np.unique(table["session"]))
            details.append(row)
        shared = self.root / SHARED_FILE
        if shared.exists():
            mask = np.load(shared, allow_pickle=False)
            test_ids = np.unique(np.concatenate([self.trials(s, "test").stimulus_ids for s in self.subjects()] or [[]]))
            inside = int(mask[test_ids[test_ids < len(mask)].astype(np.int64)].sum()) if len(test_ids) else 0
            details.append({"file": SHARED_FILE, "shared images": int(mask.sum()),
                            "test images among them": f"{inside} of {len(test_ids)}"})
        for name in (IMAGES_FILE, SUBJ_INDICES_FILE):
            if (self.root / name).exists():
                f = self._open(self.root / name)
                details.append({"file": name, "datasets": {k: list(f[k].shape) for k in f if hasattr(f[k], "shape")}})
        return details

    # --------------------------------------------------------------------------------- lifecycle
    def _close(self, path: Path) -> None:
        handle = self._files.pop(path, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        for path in list(self._files):
            self._close(path)

    def __getstate__(self) -> dict[str, Any]:  # open HDF5 handles cannot travel to other processes
        state = self.__dict__.copy()
        state["_files"] = {}
        return state


LAYOUTS = ("mindeye2", "mindeye1", "litemind")


def detect_layout(root: Path) -> str:
    if any(BETAS_PATTERN.match(p.name) for p in root.iterdir()) or release_subjects(root):
        return "mindeye2"
    if any(root.rglob("*.tar")):
        return "mindeye1"
    if any(root.rglob("*_nsdgeneral_betas_tr.npy")):
        return "litemind"
    raise DataError(
        f"{root}: no NSD layout recognised; expected betas_all_subjNN_fp32_renorm.hdf5 (MindEye2), "
        "webdataset *.tar shards (MindEye1) or subjNN_nsdgeneral_betas_tr.npy (Lite-Mind)"
    )


# The openers' options, declared once (the registry, `brainbench info` and preflight read them).
NSD_OPTIONS = Options(
    Option("layout", str, "auto", "file layout on disk (auto: detected)",
           choices=("auto", "mindeye2", "mindeye1", "litemind")),
    Option("test_split", str, "auto",
           "mindeye2 release: test on wds/subjNN/new_test (MindEye2's) or test; auto: new_test when present",
           choices=("auto", "new_test", "test")),
    Option("train_repeats", str, "all",
           "mindeye1 layout: training rows are every repeat (all), one fixed repeat per image (one-per-image), "
           "or MindEye1's own sampling: each step takes repeat step % 3 of every image in its batch "
           "(one-per-step)", choices=("all", "one-per-image", "one-per-step")),
    Option("roi", str, "all",
           "mindeye2 layout: the voxels to use, by the per-voxel labels `data prepare nsd` stores "
           "(rois_subjNN.hdf5): an atlas, atlas:label[+label...] or label names, commas for a union "
           "(e.g. V1v,V1d or streams:ventral); all: every stored voxel"),
)
SYNTHETIC_NSD_OPTIONS = Options(
    Option("scale", str, "small", "simulated size: small (seconds on a laptop), tiny (tests), nsd (real sizes)",
           choices=("small", "tiny", "nsd")),
    Option("seed", int, 0, "simulator seed", minimum=0, maximum=2**32 - 1),
    Option("tokens", bool, False, "also store 257x768 token embeddings"),
    Option("images", bool, False, "also store stimulus images"),
    Option("roi", str, "all",
           "the voxels to use, by the simulator's per-voxel labels (rois_subjNN.hdf5): an atlas, "
           "atlas:label[+label...] or label names, commas for a union; all: every voxel"),
)


@declares(NSD_OPTIONS)
def open_nsd(
    root: str | Path | None, layout: str = "auto", test_split: str = "auto", train_repeats: str = "all",
    roi: str = "all", **layout_options: Any,
) -> Dataset:
    """Open NSD files on disk in any supported layout (detected from what is on disk, or named). Each option
    applies to one layout; given for another, it is refused naming the layout found."""
    if root is None:
        raise DataError("the nsd dataset reads files on disk: give their folder with --data-path")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: NSD folder not found")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown NSD layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    if train_repeats != "all" and layout != "mindeye1":
        raise DataError(f"train_repeats={train_repeats!r} picks the training rows of a MindEye1-layout folder; "
                        f"{root} is in the {layout} layout")
    if layout == "mindeye2":
        return MindEye2Nsd(root, test_split=test_split, roi=roi, **layout_options)
    if test_split != "auto":
        raise DataError(f"test_split={test_split!r} picks a MindEye2 release folder; {root} is in the {layout} layout")
    if roi != "all":
        raise DataError(f"roi={roi!r} selects voxels of a MindEye2-layout folder with per-voxel ROI labels; {root} "
                        f"is in the {layout} layout, which stores nsdgeneral voxels only")
    if layout == "mindeye1":
        from brainbench_nsd.mindeye1 import MindEye1Nsd

        return MindEye1Nsd(root, train_repeats=train_repeats, **layout_options)
    from brainbench_nsd.litemind_npy import LiteMindNsd

    return LiteMindNsd(root, **layout_options)


@declares(SYNTHETIC_NSD_OPTIONS)
def open_synthetic_nsd(
    root: str | Path | None = None,
    scale: str = "small",
    seed: int = 0,
    tokens: bool = False,
    images: bool = False,
    roi: str = "all",
) -> Dataset:
    """The simulator's NSD (generated on first use, each subject when first requested) through the real reader."""
    from brainbench.paths import synthetic_root
    from brainbench.simulate.nsd import GENERATOR_VERSION, SUBJECTS, SyntheticNsd

    # The generator version is part of the cached folder's name, so changed data never mix with old files.
    root = Path(root) if root is not None else synthetic_root("nsd", f"{scale}-v{GENERATOR_VERSION}", int(seed))
    sim = SyntheticNsd(root, scale, int(seed))
    sim.ensure_common(tokens=bool(tokens), images=bool(images))
    dataset = MindEye2Nsd(
        root,
        name="synthetic-nsd",
        synthetic=True,
        subject_list=list(SUBJECTS),
        prepare=sim.ensure_subject,
        prepare_tokens=partial(sim.ensure_common, tokens=True),
        roi=roi,
    )
    dataset.demo_scale = scale != "nsd"  # the real-size scale trains with the reference recipes
    return dataset
