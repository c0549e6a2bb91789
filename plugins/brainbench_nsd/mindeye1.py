"""NSD in MindEye1's webdataset layout: plain (uncompressed) tar shards read with the standard library.

``tarfile``, not the webdataset package: a large split is indexed once and its voxels read later from each
member's byte offset, which webdataset's sample stream does not give; and ``import webdataset`` imports torch.

Layout (``root`` is the folder above the split folders):
- ``train/*.tar``, ``test/*.tar`` and optionally ``val/*.tar`` (read as training data). Without split folders
  the split is taken from the shard name's prefix (``train_subj01_0.tar``). The subject is the number after
  ``subj`` in the shard's path (``train_subj01_0.tar`` -> 1); a path without one is subject 1.
- Each sample groups the members sharing the key before the first dot of the file name
  (``sample000001.nsdgeneral.npy`` -> ``sample000001``) and holds:
  ``nsdgeneral.npy`` (n_repeats, n_voxels) float (MindEye1: the image's 3 repeats; a row that is all NaN or
  all zero pads a missing repeat and is dropped), ``coco73k.npy`` (the NSD 73k image index, one value),
  optionally ``trial.npy`` (one global trial number per repeat; -1 pads) and the image (``jpg``, decoded with
  Pillow by ``images()``, (n, 3, H, W) float in [0, 1]).

Trials have one row per repeat (so the harness's repeat option decides averaging), ordered by trial number;
``average_repeats=True`` gives one row per sample, the mean of its repeats (what MindEye1 tests on).

MindEye1 TRAINS on single trials, one repeat per step: every epoch shows each image once, the whole batch
of step s taking repeat s % 3 (models.md). ``train_repeats`` says what the training split holds:
- ``"all"`` (default): every kept repeat is a row, so an epoch shows each image 3 times (3x the reference's
  steps per epoch);
- ``"one-per-image"``: one row per image, its repeat fixed by the image's position (sample k keeps repeat
  k % n_kept, so a third of the images show each repeat, as in one epoch of the reference). An epoch then
  has the reference's length and step count; it differs in that an image shows the same repeat every
  epoch, where the reference's choice moves with the step, so over a run it sees all three;
- ``"one-per-step"``: the reference's own sampling. The training split holds every repeat and is marked
  ``Trials.one_repeat_per_step``: an epoch then draws images, and step s takes repeat s % 3 of every image
  in its batch (the trainer's batch source does it; an image with fewer kept repeats cycles through them).
Sessions come from trial numbers (``trials_per_session``, 750 in NSD). A split's shards are indexed on first
use (one pass that also checks every array); a split under ``in_memory_bytes`` keeps the arrays read, a
larger one reads voxels on demand from the tar files.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import DataError
from brainbench.interfaces import Dataset, Trials
from brainbench_nsd.h5rows import RowView
from brainbench_nsd.marker import is_synthetic, mark_synthetic

VOXELS_FIELD, IMAGE_ID_FIELD, TRIAL_FIELD = "nsdgeneral.npy", "coco73k.npy", "trial.npy"
IMAGE_FIELDS = ("jpg", "jpeg", "png")
SPLIT_FOLDERS = {"train": "train", "val": "train", "test": "test"}
NSD_TRIALS_PER_SESSION = 750
#: A split whose shards total less than this is kept in memory after the indexing pass (which reads it all).
IN_MEMORY_BYTES = 256 * 2**20
#: What the training split holds: every repeat, or one fixed repeat per image (see the module docstring).
TRAIN_REPEATS = ("all", "one-per-image", "one-per-step")
_SUBJECT = re.compile(r"subj0*(\d+)", re.IGNORECASE)
_SHARD_NUMBER = re.compile(r"(\d+)\.tar$")


def load_npy(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{where}: not a readable .npy array ({err})") from None


@dataclass(frozen=True)
class Shard:
    path: Path
    split: str  # "train" or "test"
    subject: int


def find_shards(root: Path) -> list[Shard]:
    """Every ``*.tar`` under ``root`` with its split and subject, in shard-number order."""
    shards = []
    for path in root.rglob("*.tar"):
        rel = path.relative_to(root)
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        prefix = path.name.split("_", 1)[0].lower()
        split = SPLIT_FOLDERS.get(folder.lower()) or SPLIT_FOLDERS.get(prefix)
        if split is None:
            raise DataError(
                f"{path}: cannot tell the split of this shard; put shards in train/, test/ or val/ folders "
                "or name them train_*.tar / test_*.tar / val_*.tar"
            )
        match = _SUBJECT.search(str(rel))
        shards.append(Shard(path, split, int(match.group(1)) if match else 1))

    def order(shard: Shard) -> tuple[Any, ...]:
        number = _SHARD_NUMBER.search(shard.path.name)
        return (shard.subject, shard.split, str(shard.path.parent), int(number.group(1)) if number else -1,
                shard.path.name)

    return sorted(shards, key=order)


@dataclass
class SplitIndex:
    """One row per kept repeat: where its sample's voxels are in which shard, and which repeat it is."""

    shard_paths: list[Path]
    member_shard: np.ndarray  # (n_samples,) index into shard_paths
    member_offset: np.ndarray  # (n_samples,) byte offset of the nsdgeneral.npy member's data
    member_size: np.ndarray  # (n_samples,)
    member_name: list[str]
    valid: list[np.ndarray]  # per sample: the indices of its kept repeats
    image_id: np.ndarray  # (n_samples,) int64
    trial: list[np.ndarray]  # per sample: trial numbers of the kept repeats (-1 when unknown)
    n_voxels: int
    #: per sample, its (n_repeats, n_voxels) float32 array, kept from the indexing pass for a small split
    in_memory: list[np.ndarray] | None = None
    #: per sample, (byte offset, size, member name) of its image (jpg) member, or None without one
    image_member: list[tuple[int, int, str] | None] | None = None


class ShardRows:
    """Rows of one split, read from the tar files on slicing: row r is (sample, repeat) or a sample's mean."""

    def __init__(self, index: SplitIndex, sample_of_row: np.ndarray, repeat_of_row: np.ndarray) -> None:
        self.index = index
        self.sample_of_row = sample_of_row
        self.repeat_of_row = repeat_of_row  # -1: the mean of the sample's kept repeats
        self._rows = None if index.in_memory is None else self._read(np.arange(len(sample_of_row)))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.sample_of_row), self.index.n_voxels)

    def _sample(self, sample: int, handles: dict[int, Any]) -> np.ndarray:
        shard = int(self.index.member_shard[sample])
        if shard not in handles:
            handles[shard] = open(self.index.shard_paths[shard], "rb")  # noqa: SIM115 - closed by caller
        handle = handles[shard]
        handle.seek(int(self.index.member_offset[sample]))
        where = f"{self.index.shard_paths[shard]}: member {self.index.member_name[sample]}"
        return load_npy(handle.read(int(self.index.member_size[sample])), where)

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._rows is not None:
            return self._rows[index]
        return self._read(np.atleast_1d(np.arange(len(self.sample_of_row))[index]))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.index.n_voxels), dtype=np.float32)
        samples, positions = np.unique(self.sample_of_row[rows], return_inverse=True)
        by_sample = np.split(np.argsort(positions, kind="stable"), np.cumsum(np.bincount(positions))[:-1])
        handles: dict[int, Any] = {}
        try:
            for sample, where in zip(samples.tolist(), by_sample, strict=True):  # one read per sample
                if self.index.in_memory is not None:
                    block = self.index.in_memory[sample]
                else:
                    block = np.atleast_2d(self._sample(sample, handles)).astype(np.float32)
                mean = block[self.index.valid[sample]].astype(np.float64).mean(axis=0)
                for i in where:
                    repeat = int(self.repeat_of_row[rows[i]])
                    out[i] = mean if repeat < 0 else block[repeat]
        finally:
            for handle in handles.values():
                handle.close()
        return out


def _sample_key(name: str) -> tuple[str, str]:
    folder, base = posixpath.split(name)
    key, _, field = base.partition(".")
    return posixpath.join(folder, key), field.lower()


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> np.ndarray:
    extracted = tar.extractfile(member)
    if extracted is None:
        raise DataError(f"{path}: member {member.name} is not a regular file")
    return load_npy(extracted.read(), f"{path}: member {member.name}")


@dataclass
class _Sample:
    member: tarfile.TarInfo  # the nsdgeneral.npy member
    kept: np.ndarray  # indices of the repeats that are not padding
    image_id: int
    trial: np.ndarray  # trial numbers of the kept repeats
    n_voxels: int
    values: np.ndarray  # (n_repeats, n_voxels) float32
    image_member: tarfile.TarInfo | None = None


def _read_sample(tar: tarfile.TarFile, path: Path, key: str, fields: dict[str, tarfile.TarInfo]) -> _Sample:
    for needed in (VOXELS_FIELD, IMAGE_ID_FIELD):
        if needed not in fields:
            raise DataError(
                f"{path}: sample {key!r} has no {key}.{needed} (has {', '.join(sorted(fields))}); "
                f"MindEye1 samples need {VOXELS_FIELD} (3 x n_voxels) and {IMAGE_ID_FIELD} (1,)"
            )
    where = f"{path}: member {fields[VOXELS_FIELD].name}"
    voxels = np.atleast_2d(_read_member(tar, fields[VOXELS_FIELD], path))
    if voxels.ndim != 2 or voxels.shape[0] == 0:
        raise DataError(f"{where} has shape {voxels.shape}; expected (n_repeats, n_voxels), e.g. (3, V)")
    values = voxels.astype(np.float32)
    padding = np.isnan(values).all(axis=1) | (values == 0).all(axis=1)
    kept = np.flatnonzero(~padding)
    if len(kept) == 0:
        raise DataError(f"{where}: every repeat is padding (all NaN or all zero)")
    if not np.isfinite(values[kept]).all():
        raise DataError(f"{where}: NaN or infinite voxel values in a repeat that is not padding")
    image = _read_member(tar, fields[IMAGE_ID_FIELD], path).ravel()
    if image.size != 1 or not np.isfinite(image).all() or image[0] < 0 or image[0] != np.round(image[0]):
        raise DataError(
            f"{path}: member {fields[IMAGE_ID_FIELD].name} holds {image.tolist()}; expected shape (1,): "
            "one non-negative integer, the NSD 73k image index"
        )
    trial = np.full(len(values), -1, dtype=np.int64)
    if TRIAL_FIELD in fields:
        stored = _read_member(tar, fields[TRIAL_FIELD], path).ravel()
        if stored.size != len(values):
            raise DataError(
                f"{path}: member {fields[TRIAL_FIELD].name} holds {stored.size} trial numbers; expected "
                f"shape ({len(values)},), one per repeat of {fields[VOXELS_FIELD].name}"
            )
        trial = np.where(np.isfinite(stored), stored, -1).astype(np.int64)
    picture = next((fields[f] for f in IMAGE_FIELDS if f in fields), None)
    return _Sample(fields[VOXELS_FIELD], kept, int(image[0]), trial[kept], int(values.shape[1]), values, picture)


def _shard_samples(path: Path, keep: bool) -> list[_Sample]:
    try:
        tar = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{path}: not a readable uncompressed tar shard ({err})") from None
    with tar:
        grouped: dict[str, dict[str, tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            if member.isfile():
                key, field = _sample_key(member.name)
                grouped.setdefault(key, {})[field] = member
        samples = [_read_sample(tar, path, key, fields) for key, fields in grouped.items()]
    if not keep:
        for sample in samples:
            sample.values = sample.values[:0]  # drop the voxels: they are read again on demand
    return samples


def _index_split(shards: list[Shard], in_memory_bytes: int) -> SplitIndex:
    """Read every sample of these shards once: check shapes and values, keep where the voxels are.

    The arrays read are kept in memory when the split's shards total under ``in_memory_bytes``.
    """
    paths = [s.path for s in shards]
    in_memory = sum(p.stat().st_size for p in paths) <= in_memory_bytes
    per_shard = [_shard_samples(path, keep=in_memory) for path in paths]
    samples = [sample for found in per_shard for sample in found]
    if not samples:
        raise DataError(f"no samples in the shards {', '.join(map(str, paths))}")
    shard_of = np.repeat(np.arange(len(paths)), [len(found) for found in per_shard])
    n_voxels = samples[0].n_voxels
    for sample, shard in zip(samples, shard_of, strict=True):
        if sample.n_voxels != n_voxels:
            raise DataError(
                f"{paths[shard]}: member {sample.member.name} has {sample.n_voxels} voxels; expected "
                f"(n_repeats, {n_voxels}) like {samples[0].member.name} in {paths[shard_of[0]]}"
            )
    return SplitIndex(
        shard_paths=paths,
        member_shard=shard_of,
        member_offset=np.array([s.member.offset_data for s in samples]),
        member_size=np.array([s.member.size for s in samples]),
        member_name=[s.member.name for s in samples],
        valid=[s.kept for s in samples],
        image_id=np.array([s.image_id for s in samples], dtype=np.int64),
        trial=[s.trial for s in samples],
        n_voxels=n_voxels,
        in_memory=[s.values for s in samples] if in_memory else None,
        image_member=[
            None if s.image_member is None else (s.image_member.offset_data, s.image_member.size, s.image_member.name)
            for s in samples
        ],
    )


def decode_image(data: bytes, where: str) -> np.ndarray:
    """A jpg/png member as (3, H, W) float32 in [0, 1], decoded with Pillow."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as picture:
            pixels = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{where}: not a readable image ({err})") from None
    return pixels.transpose(2, 0, 1)


class MindEye1Nsd(Dataset):
    """NSD from MindEye1 webdataset shards (see the module docstring)."""

    default_target = "clip-vit-l-14"
    token_target = "clip-vit-l-14-tokens"

    def __init__(
        self,
        root: Path,
        name: str = "nsd",
        average_repeats: bool = False,
        trials_per_session: int = NSD_TRIALS_PER_SESSION,
        in_memory_bytes: int = IN_MEMORY_BYTES,
        train_repeats: str = "all",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: NSD folder not found")
        if train_repeats not in TRAIN_REPEATS:
            raise DataError(f"train_repeats must be one of {', '.join(TRAIN_REPEATS)}, got {train_repeats!r}")
        self.name = name
        self.synthetic = is_synthetic(self.root)  # rewritten from simulated data: still synthetic
        self.average_repeats = bool(average_repeats)
        if self.average_repeats and train_repeats != "all":
            raise DataError(
                f"train_repeats={train_repeats!r} picks single trials; it cannot be combined with average_repeats"
            )
        self.train_repeats = train_repeats
        self.trials_per_session = int(trials_per_session)
        self.in_memory_bytes = int(in_memory_bytes)
        self._shards = find_shards(self.root)
        if not self._shards:
            raise DataError(f"{self.root}: no *.tar shards under train/, test/ or val/ (MindEye1 layout)")
        self._indexes: dict[tuple[int, str], SplitIndex] = {}

    def subjects(self) -> list[int]:
        return sorted({s.subject for s in self._shards})

    def _index(self, subject: int, split: str) -> SplitIndex:
        if subject not in self.subjects():
            raise DataError(f"{self.root}: no shards for subject {subject}; found subjects {self.subjects()}")
        if split not in ("train", "test"):
            raise DataError(f"NSD has splits 'train' and 'test', not {split!r}")
        if (subject, split) not in self._indexes:
            shards = [s for s in self._shards if s.subject == subject and s.split == split]
            if not shards:
                raise DataError(
                    f"{self.root}: no {split} shards for subject {subject} "
                    f"(expected {split}/{split}_subj{subject:02d}_N.tar)"
                )
            self._indexes[(subject, split)] = _index_split(shards, self.in_memory_bytes)
        return self._indexes[(subject, split)]

    def n_voxels(self, subject: int) -> int:
        return self._index(subject, "train").n_voxels

    def _image_members(self) -> dict[int, tuple[Path, int, int, str]]:
        """73k image id -> where its image member is, over every subject's and split's shards."""
        found: dict[int, tuple[Path, int, int, str]] = {}
        for subject in self.subjects():
            for split in sorted({s.split for s in self._shards if s.subject == subject}):
                index = self._index(subject, split)
                for k, member in enumerate(index.image_member or []):
                    if member is not None:
                        path = index.shard_paths[int(index.member_shard[k])]
                        found.setdefault(int(index.image_id[k]), (path, *member))
        return found

    def images(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        """The samples' ``jpg`` members decoded with Pillow, (n, 3, H, W) float32 in [0, 1]; None without any."""
        members = self._image_members()
        if not members:
            return None
        ids = np.asarray(stimulus_ids, dtype=np.int64)
        out: np.ndarray | None = None
        for row, image_id in enumerate(ids.tolist()):
            if image_id not in members:
                raise DataError(f"{self.root}: no shard holds an image (jpg) for 73k image id {image_id}")
            path, offset, size, name = members[image_id]
            with open(path, "rb") as handle:
                handle.seek(offset)
                pixels = decode_image(handle.read(size), f"{path}: member {name}")
            if out is None:
                out = np.empty((len(ids), *pixels.shape), dtype=np.float32)
            if pixels.shape != out.shape[1:]:
                raise DataError(f"{path}: member {name} is {pixels.shape[1:]} pixels; earlier images {out.shape[2:]}")
            out[row] = pixels
        return out if out is not None else np.empty((0, 3, 0, 0), dtype=np.float32)

    def trials(self, subject: int, split: str) -> Trials:
        index = self._index(subject, split)
        if self.average_repeats:
            samples = np.arange(len(index.image_id))
            repeats = np.full(len(samples), -1)
            trial = np.array([t.min() if len(t) else -1 for t in index.trial], dtype=np.int64)
        elif split == "train" and self.train_repeats == "one-per-image":
            samples = np.arange(len(index.image_id))
            chosen = [k % len(index.valid[k]) for k in samples.tolist()]  # a position among the kept repeats
            repeats = np.array([index.valid[k][c] for k, c in zip(samples, chosen, strict=True)], dtype=np.int64)
            trial = np.array([index.trial[k][c] for k, c in zip(samples, chosen, strict=True)], dtype=np.int64)
        else:
            counts = [len(v) for v in index.valid]
            samples = np.repeat(np.arange(len(index.image_id)), counts)
            repeats = np.concatenate(index.valid)
            trial = np.concatenate(index.trial)
        order = np.lexsort((np.arange(len(samples)), trial))  # by trial number, ties in shard order
        samples, repeats, trial = samples[order], repeats[order], trial[order]
        file = ", ".join(str(p) for p in index.shard_paths)
        view = RowView(ShardRows(index, samples, repeats), np.arange(len(samples)), file, VOXELS_FIELD)
        sessions = trial // self.trials_per_session + 1 if len(trial) and (trial >= 0).all() else None
        per_step = split == "train" and self.train_repeats == "one-per-step" and not self.average_repeats
        return Trials(view, index.image_id[samples], sessions, one_repeat_per_step=per_step)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "synthetic": self.synthetic,
            "layout": "mindeye1",
            "root": str(self.root),
            "subjects": self.subjects(),
            "shards": {split: sum(s.split == split for s in self._shards) for split in ("train", "test")},
            "average_repeats": self.average_repeats,
            "train_repeats": self.train_repeats,
            **self._found_and_missing(),
        }

    def _found_and_missing(self) -> dict[str, Any]:
        """Whether the shards carry images, and which parts are absent, in the user's words."""
        missing = []
        for subject in self.subjects():
            for split in ("train", "test"):
                if not any(s.subject == subject and s.split == split for s in self._shards):
                    missing.append(f"subject {subject}: no {split} shards ({split}/{split}_subj{subject:02d}_N.tar)")
        try:
            n_images = len(self._image_members())
        except DataError as err:
            return {"images": f"unknown ({err})", "missing": missing}
        if not n_images:
            missing.append("stimulus images: no jpg members in the shards, so CLIP targets cannot be computed here; "
                           "use a target cache built where the images are (`brainbench targets build`)")
        return {"images": f"jpg in the shards ({n_images} images)" if n_images else "absent", "missing": missing}


# ------------------------------------------------------------------------------------------- writing


def _add_npy(tar: tarfile.TarFile, name: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    info = tarfile.TarInfo(name)
    info.size = buffer.tell()
    buffer.seek(0)
    tar.addfile(info, buffer)


def write_mindeye1_shards(
    root: Path,
    subject: int,
    splits: Mapping[str, Trials],
    trial_numbers: Mapping[str, np.ndarray] | None = None,
    samples_per_shard: int = 64,
    repeats: int = 3,
    synthetic: bool = False,
) -> list[Path]:
    """Write trials as MindEye1 shards: one sample per image, its repeats padded with NaN rows to ``repeats``.

    ``trial_numbers[split]`` gives each trial row's global trial number (default: its row number).
    ``synthetic=True`` (trials from the simulator) leaves the marker that keeps them labelled synthetic.
    """
    written = []
    if synthetic:
        Path(root).mkdir(parents=True, exist_ok=True)
        mark_synthetic(Path(root), "write_mindeye1_shards")
    for split, trials in splits.items():
        voxels = trials.load()
        numbers = np.arange(trials.n_trials) if trial_numbers is None else np.asarray(trial_numbers[split])
        images = list(dict.fromkeys(trials.stimulus_ids.tolist()))  # in order of first presentation
        folder = Path(root) / split
        folder.mkdir(parents=True, exist_ok=True)
        for shard_number, start in enumerate(range(0, len(images), samples_per_shard)):
            path = folder / f"{split}_subj{subject:02d}_{shard_number}.tar"
            with tarfile.open(path, "w") as tar:
                for sample, image in enumerate(images[start : start + samples_per_shard], start=start):
                    rows = np.flatnonzero(trials.stimulus_ids == image)
                    if len(rows) > repeats:
                        raise DataError(f"image {image} has {len(rows)} trials; the layout holds {repeats}")
                    block = np.full((repeats, voxels.shape[1]), np.nan, dtype=np.float32)
                    block[: len(rows)] = voxels[rows]
                    trial = np.full(repeats, -1, dtype=np.int64)
                    trial[: len(rows)] = numbers[rows]
                    key = f"sample{sample:06d}"
                    _add_npy(tar, f"{key}.{VOXELS_FIELD}", block)
                    _add_npy(tar, f"{key}.{IMAGE_ID_FIELD}", np.array([image], dtype=np.int64))
                    _add_npy(tar, f"{key}.{TRIAL_FIELD}", trial)
            written.append(path)
    return written
