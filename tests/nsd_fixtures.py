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


@dataclass
class FakeNsd:
    """A raw-NSD tree (small) and what a correct preparation must produce from it."""

    root: Path
    subject: int
    trials_per_session: int
    volumes: list[np.ndarray]  # per session (trials, X, Y, Z) int16, the NIfTI's axis order
    mask: np.ndarray  # (X, Y, Z) bool
    image_of_trial: np.ndarray  # 0-based 73k id per global trial
    shared: np.ndarray  # (73000,) bool
    atlases: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (X, Y, Z) int16 as written
    label_names: dict[str, dict[int, str]] = field(default_factory=dict)  # name -> value -> name (as meant)


#: ROI atlases the fake release holds beside nsdgeneral: values 1..n and whether a ctab names them (without
#: one, prf-visualrois is read with NSD's published numbering). floc-faces' names exist only in its ctab.
FAKE_ATLASES = {
    "prf-visualrois": (["V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"], False),
    "streams": (["early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"], True),
    "floc-faces": (["OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"], True),
}


def write_ctab(path: Path, names: list[str]) -> None:
    """A FreeSurfer colour table like NSD's: ``VALUE<TAB>NAME``, some lines with RGBA columns after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["0\tUnknown"] + [f"{v}\t{n}" + ("\t200\t30\t30\t0" if v % 2 else "") for v, n in enumerate(names, 1)]
    path.write_text("\n".join(lines) + "\n")


def write_fake_nsd(
    root: Path,
    subject: int = 1,
    sessions: int = 3,
    trials_per_session: int = 20,
    volume: tuple[int, int, int] = (6, 7, 8),
    n_subject_images: int = 30,
    n_shared: int = 5,
    seed: int = 0,
    n_ids: int = 73000,
) -> FakeNsd:
    """NSD's raw files, written by nibabel (ROI mask), scipy.io (design .mat) and h5py (session betas).

    Departures from the real release, to stay small: ``trials_per_session`` trials per session (NSD: 750),
    a ``volume`` of (X, Y, Z) voxels (NSD func1pt8mm: 81 x 104 x 83), ``n_subject_images`` images per subject
    (NSD: 10,000) and a ``masterordering`` as long as these sessions (NSD: 30,000); image ids below ``n_ids``
    (NSD: 73,000) so a test can store a small target file. Besides nsdgeneral the ROI folder holds the
    ``FAKE_ATLASES`` (-1 where nsdgeneral has -1: outside the brain), with ``.mgz.ctab`` label names under
    ``nsddata/freesurfer/subjNN/label/`` for those marked so.
    """
    import nibabel
    import scipy.io

    root = Path(root)
    rng = np.random.default_rng(seed)
    n_trials = sessions * trials_per_session
    subjectim = np.stack([rng.choice(np.arange(1, n_ids + 1), n_subject_images, replace=False) for _ in range(8)])
    sharedix = subjectim[subject - 1, :n_shared]  # 1-based 73k ids, shown to every subject
    shown = np.r_[np.repeat(np.arange(n_shared), 3), rng.integers(n_shared, n_subject_images, n_trials - 3 * n_shared)]
    masterordering = rng.permutation(shown) + 1  # 1-based into the subject's images
    design = root / "nsddata" / "experiments" / "nsd"
    design.mkdir(parents=True)
    scipy.io.savemat(design / "nsd_expdesign.mat", {
        "masterordering": masterordering[None, :].astype(np.float64),
        "subjectim": subjectim.astype(np.float64),
        "sharedix": sharedix[None, :].astype(np.float64),
    })
    labels = rng.choice(np.array([1, 0, -1], dtype=np.int16), size=volume, p=[0.4, 0.4, 0.2])
    roi = root / "nsddata" / "ppdata" / f"subj{subject:02d}" / "func1pt8mm" / "roi"
    roi.mkdir(parents=True)
    nibabel.save(nibabel.Nifti1Image(labels, affine=np.eye(4)), str(roi / "nsdgeneral.nii.gz"))
    atlases, label_names = {}, {}
    atlas_rng = np.random.default_rng(seed + 1000)  # its own stream: the betas stay those of earlier fixtures
    for name, (names, with_ctab) in FAKE_ATLASES.items():
        values = atlas_rng.integers(0, len(names) + 1, size=volume).astype(np.int16)
        values[labels == -1] = -1
        nibabel.save(nibabel.Nifti1Image(values, affine=np.eye(4)), str(roi / f"{name}.nii.gz"))
        if with_ctab:
            write_ctab(root / "nsddata" / "freesurfer" / f"subj{subject:02d}" / "label" / f"{name}.mgz.ctab", names)
        atlases[name], label_names[name] = values, dict(enumerate(names, 1))
    betas = (root / "nsddata_betas" / "ppdata" / f"subj{subject:02d}" / "func1pt8mm"
             / "betas_fithrf_GLMdenoise_RR")
    betas.mkdir(parents=True)
    volumes = []
    for session in range(1, sessions + 1):
        offset = rng.normal(0, 2000, size=volume)  # sessions differ in baseline: what per-session z-scoring removes
        data = np.clip(offset + rng.normal(0, 900, size=(trials_per_session, *volume)), -32000, 32000).astype(np.int16)
        volumes.append(data)
        with h5py.File(betas / f"betas_session{session:02d}.hdf5", "w") as f:
            f.create_dataset("betas", data=data.transpose(0, 3, 2, 1))  # h5py shows the NIfTI's axes reversed
    image_of_trial = subjectim[subject - 1, masterordering - 1] - 1
    shared = np.zeros(73000, dtype=bool)
    shared[sharedix - 1] = True
    atlases["nsdgeneral"], label_names["nsdgeneral"] = labels, {1: "nsdgeneral"}
    return FakeNsd(root, subject, trials_per_session, volumes, labels == 1, image_of_trial, shared, atlases,
                   label_names)


def expected_prepared_betas(fake: FakeNsd, mask: np.ndarray | None = None) -> np.ndarray:
    """Masked (nsdgeneral unless ``mask``, (X, Y, Z) bool, is given), /300, z-scored per voxel per session;
    voxels in NIfTI order with X fastest (h5py C order)."""
    x, y, z = np.nonzero(fake.mask if mask is None else mask)
    order = np.lexsort((x, y, z))  # z slowest, x fastest
    x, y, z = x[order], y[order], z[order]
    parts = []
    for data in fake.volumes:
        session = data[:, x, y, z].astype(np.float64) / 300.0
        std = session.std(axis=0)
        parts.append((session - session.mean(axis=0)) / np.where(std > 0, std, np.inf))
    return np.concatenate(parts).astype(np.float32)
