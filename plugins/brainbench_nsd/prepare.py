"""Raw NSD -> the MindEye2 layout: ``brainbench data prepare nsd NSD_ROOT OUT --subject N [--roi SPEC]``.

Reads, for one subject (``NSD_ROOT`` is the folder holding ``nsddata`` and ``nsddata_betas``):
- ``nsddata_betas/ppdata/subjNN/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionSS.hdf5``: ``betas``
  (trials, Z, Y, X) int16 = percent signal change x 300 (h5py shows the NIfTI's axes reversed);
- the ROI atlases ``nsddata/ppdata/subjNN/func1pt8mm/roi/<atlas>.nii.gz`` (nibabel, (X, Y, Z)) and their
  label names ``nsddata/freesurfer/subjNN/label/<atlas>.mgz.ctab`` (``rois.py``): the ROI spec (default
  ``nsdgeneral``: 1 inside) picks the voxels kept;
- ``nsddata/experiments/nsd/nsd_expdesign.mat`` (scipy.io): ``masterordering`` (trials in order, 1-based
  into the subject's images), ``subjectim`` (8 x 10,000 1-based 73k ids), ``sharedix`` (1-based 73k ids).

Per session: the ROI's voxels (in the h5py array's C order, i.e. the NIfTI's X-fastest order), divided by
300, z-scored per voxel over the session's trials (population std; a constant voxel becomes 0). Trials keep
their order: global trial t (0-based) is row t of the betas and shows image ``subjectim[s, masterordering[t]-1]-1``.
Trials whose image is in ``sharedix`` form the test split (MindEye2's ``new_test``), the rest train.

Writes into ``OUT`` (read back by ``MindEye2Nsd``):
- ``betas_all_subjNN_fp32_renorm.hdf5`` (``betas`` (trials, voxels) float32);
- ``wds/subjNN/train/K.tar`` (session K+1's training trials) and ``wds/subjNN/new_test/0.tar``, one sample per
  trial with ``behav.npy`` (1, 17): column 0 the 73k id, 1 subject, 2 session, 5 global trial index; the
  other columns (run, trial in run, responses) are NaN, not known from these files; ``past_behav``,
  ``future_behav`` and ``olds_behav`` are not written (nothing reads them for training or testing);
- ``shared1000.npy`` (bool over the 73k ids);
- ``rois_subjNN.hdf5``: each kept voxel's label in every label atlas the release has (nsdgeneral,
  prf-visualrois, streams, floc-*), so the NSD dataset's ``roi=`` option can select a region at run time.

Memory: one session's ROI voxels at a time (read in blocks of trials, cropped to the ROI's bounding box).
Resumable: each finished session is kept as ``OUT/.prepare_subjNN/session_SS.npy`` (written to a temporary
name, then renamed), and a rerun after an interruption skips it; the folder is removed once the betas file
is complete. Atomic: every output file is written under a temporary name and
renamed into place with ``os.replace``; the betas file appears only once every session is done.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import DataError

NSD_TRIALS_PER_SESSION = 750
NSD_IMAGES = 73000
BETAS_SCALE = 300.0
#: Trials read from a session file at once (a real NSD trial volume is ~1.4 MB of int16).
READ_TRIALS = 50
BEHAV_COLUMNS = 17


def session_file(nsd_root: Path, subject: int, session: int) -> Path:
    return (Path(nsd_root) / "nsddata_betas" / "ppdata" / f"subj{subject:02d}" / "func1pt8mm"
            / "betas_fithrf_GLMdenoise_RR" / f"betas_session{session:02d}.hdf5")


def design_file(nsd_root: Path) -> Path:
    return Path(nsd_root) / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat"


def find_sessions(nsd_root: Path, subject: int) -> list[int]:
    folder = session_file(nsd_root, subject, 1).parent
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected betas_sessionSS.hdf5 files of subject {subject})")
    found = sorted(int(p.stem.removeprefix("betas_session")) for p in folder.glob("betas_session[0-9]*.hdf5"))
    if not found:
        raise DataError(f"{folder}: no betas_sessionSS.hdf5 files")
    return found


def field_library(name: str) -> Any:
    """nibabel / scipy, or an error saying how to install them (they are an optional extra)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise DataError(
            f"`brainbench data prepare nsd` reads NSD's files with {name}, which is not installed; "
            "pip install 'brainbench[nsd-prepare]' (nibabel, scipy)"
        ) from None


def read_roi(nsd_root: Path, subject: int, spec: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The ROI of ``spec`` as a bool volume in h5py's (Z, Y, X) axis order, and the atlases read for it."""
    from brainbench_nsd.rois import release_atlases, roi_folder, select

    atlases = release_atlases(nsd_root, subject, spec)
    shapes = {name: atlas.values.shape for name, atlas in atlases.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{roi_folder(nsd_root, subject)}: the atlases are on different grids: "
                        + ", ".join(f"{n} {s[::-1]}" for n, s in shapes.items()))
    inside = select(spec, atlases, str(roi_folder(nsd_root, subject)))
    if not inside.any():
        raise DataError(f"{roi_folder(nsd_root, subject)}: ROI {spec!r} holds no voxel")
    return inside, atlases


@dataclass(frozen=True)
class Design:
    image_of_trial: np.ndarray  # (n_trials,) 0-based 73k id per global trial
    shared: np.ndarray  # (73000,) bool


def read_design(path: Path, subject: int) -> Design:
    if not path.exists():
        raise DataError(f"{path}: NSD experiment design not found (nsd_expdesign.mat)")
    field_library("scipy")
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:
        raise DataError(f"{path}: not a readable .mat file ({err})") from None
    for key in ("masterordering", "subjectim", "sharedix"):
        if key not in mat:
            present = sorted(k for k in mat if not k.startswith("__"))
            raise DataError(f"{path}: variable {key!r} missing (has {present})")
    order = np.asarray(mat["masterordering"]).ravel().astype(np.int64)
    subjectim = np.asarray(mat["subjectim"]).astype(np.int64)
    if subjectim.ndim != 2 or not 1 <= subject <= subjectim.shape[0]:
        raise DataError(f"{path}: 'subjectim' has shape {subjectim.shape}; no row for subject {subject}")
    if order.min() < 1 or order.max() > subjectim.shape[1]:
        raise DataError(f"{path}: 'masterordering' must be 1-based indices into the {subjectim.shape[1]} images")
    image_of_trial = subjectim[subject - 1, order - 1] - 1
    shared = np.zeros(NSD_IMAGES, dtype=bool)
    shared[np.asarray(mat["sharedix"]).ravel().astype(np.int64) - 1] = True
    return Design(image_of_trial, shared)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    where = np.nonzero(mask)
    return tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)


def _check_trials(path: Path, trials: int) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            found = handle["betas"].shape[0] if "betas" in handle else None
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None
    if found is not None and found != trials:
        raise DataError(f"{path}: 'betas' holds {found} trials; expected {trials} per session (--trials-per-session)")


def zscore_session(path: Path, mask: np.ndarray, trials: int) -> np.ndarray:
    """(trials, n_voxels) float32: the session's ROI voxels / 300, z-scored per voxel over its trials."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None
    with handle:
        if "betas" not in handle:
            raise DataError(f"{path}: dataset 'betas' missing (expected ({trials}, Z, Y, X) int16)")
        ds = handle["betas"]
        if ds.ndim != 4 or ds.shape[1:] != mask.shape:
            raise DataError(
                f"{path}: 'betas' has shape {ds.shape}; expected (trials, {', '.join(map(str, mask.shape))}), the "
                "ROI atlases' (X, Y, Z) reversed"
            )
        if ds.shape[0] != trials:
            raise DataError(f"{path}: 'betas' holds {ds.shape[0]} trials; expected {trials} per session "
                            "(--trials-per-session)")
        box = _bounding_box(mask)
        inner = mask[box]
        out = np.empty((trials, int(inner.sum())), dtype=np.float32)
        for start in range(0, trials, READ_TRIALS):
            stop = min(start + READ_TRIALS, trials)
            block = ds[(slice(start, stop), *box)]  # int16, cropped to the ROI's bounding box
            out[start:stop] = block[:, inner].astype(np.float32) / BETAS_SCALE
    # Mean and population std in float64, a block of rows at a time (a float64 copy of the session would
    # double the memory a session needs).
    mean = np.zeros(out.shape[1], dtype=np.float64)
    for start in range(0, trials, READ_TRIALS):
        mean += out[start : start + READ_TRIALS].sum(axis=0, dtype=np.float64)
    mean /= trials
    var = np.zeros(out.shape[1], dtype=np.float64)
    for start in range(0, trials, READ_TRIALS):
        var += ((out[start : start + READ_TRIALS] - mean) ** 2).sum(axis=0)
    std = np.sqrt(var / trials)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)  # a constant voxel becomes 0, not NaN
    for start in range(0, trials, READ_TRIALS):
        block = out[start : start + READ_TRIALS]
        block[:] = (block - mean) * scale
    return out


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def behav_rows(subject: int, trials: np.ndarray, design: Design, trials_per_session: int) -> np.ndarray:
    rows = np.full((len(trials), BEHAV_COLUMNS), np.nan, dtype=np.float32)
    rows[:, 0] = design.image_of_trial[trials]
    rows[:, 1] = subject
    rows[:, 2] = trials // trials_per_session + 1
    rows[:, 5] = trials
    return rows


def write_shard(path: Path, rows: np.ndarray) -> None:
    """A plain tar shard, one sample per row holding ``behav.npy`` (1, 17); written then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for row in rows:
            buffer = io.BytesIO()
            np.save(buffer, row[None, :], allow_pickle=False)
            info = tarfile.TarInfo(f"sample{int(row[5]):09d}.behav.npy")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
    os.replace(tmp, path)


@dataclass
class PrepareResult:
    betas: Path
    n_trials: int
    n_voxels: int
    sessions: list[int]
    sessions_done_before: list[int]
    train_trials: int
    test_trials: int
    roi: str = "nsdgeneral"
    voxel_labels: Path | None = None
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)


def prepare_nsd(
    nsd_root: str | Path,
    out: str | Path,
    subject: int,
    sessions: list[int] | None = None,
    trials_per_session: int = NSD_TRIALS_PER_SESSION,
    progress: Callable[[int, int, int, bool], None] | None = None,
    roi: str = "nsdgeneral",
) -> PrepareResult:
    """Build the MindEye2 layout for one subject, session by session (see the module docstring).

    ``roi`` is an ROI spec (``rois.parse_spec``): the voxels kept. ``progress(done, total, session, skipped)``
    is called after each session.
    """
    nsd_root, out = Path(nsd_root).expanduser(), Path(out).expanduser()
    if not nsd_root.is_dir():
        raise DataError(f"{nsd_root}: NSD folder not found")
    sessions = sorted(sessions) if sessions else find_sessions(nsd_root, subject)
    expected = list(range(1, len(sessions) + 1))
    if sessions != expected:
        raise DataError(
            f"{session_file(nsd_root, subject, 1).parent}: sessions {sessions} found; the global trial order needs "
            f"sessions 1..{len(sessions)} without gaps"
        )
    mask, atlases = read_roi(nsd_root, subject, roi)
    first = session_file(nsd_root, subject, sessions[0])
    _check_trials(first, trials_per_session)  # before the design's length is compared with it
    design = read_design(design_file(nsd_root), subject)
    n_trials = len(sessions) * trials_per_session
    if len(design.image_of_trial) < n_trials:
        raise DataError(
            f"{design_file(nsd_root)}: 'masterordering' lists {len(design.image_of_trial)} trials; "
            f"{len(sessions)} sessions x {trials_per_session} need {n_trials}"
        )
    n_voxels = int(mask.sum())
    work = out / f".prepare_subj{subject:02d}"
    work.mkdir(parents=True, exist_ok=True)
    identity = {"subject": subject, "n_voxels": n_voxels, "trials_per_session": trials_per_session,
                "nsd_root": str(nsd_root.resolve()), "roi": roi}
    stamp = work / "prepare.json"
    if stamp.exists() and json.loads(stamp.read_text()) != identity:
        raise DataError(
            f"{work}: left by a build with other settings ({stamp.read_text().strip()}); "
            "delete the folder to start again"
        )
    stamp.write_text(json.dumps(identity))
    image_ids = design.image_of_trial[:n_trials]
    is_test = design.shared[image_ids]
    done_before = []
    for k, session in enumerate(sessions):
        part = work / f"session_{session:02d}.npy"
        shard = out / "wds" / f"subj{subject:02d}" / "train" / f"{session - 1}.tar"
        skipped = part.exists() and shard.exists()
        if skipped:
            done_before.append(session)
        else:
            _atomic_save_npy(part, zscore_session(session_file(nsd_root, subject, session), mask, trials_per_session))
            trials = np.arange((session - 1) * trials_per_session, session * trials_per_session)
            write_shard(shard, behav_rows(subject, trials[~is_test[trials]], design, trials_per_session))
        if progress is not None:
            progress(k + 1, len(sessions), session, skipped)
    all_trials = np.arange(n_trials)
    write_shard(out / "wds" / f"subj{subject:02d}" / "new_test" / "0.tar",
                behav_rows(subject, all_trials[is_test], design, trials_per_session))
    _atomic_save_npy(out / "shared1000.npy", design.shared)
    betas = out / f"betas_all_subj{subject:02d}_fp32_renorm.hdf5"
    _assemble(betas, [work / f"session_{s:02d}.npy" for s in sessions], n_trials, n_voxels, roi)
    from brainbench_nsd.rois import label_counts, labels_file_name, write_voxel_labels

    labels = out / labels_file_name(subject)
    write_voxel_labels(labels, mask, atlases, roi)
    shutil.rmtree(work)  # the finished betas file replaces the per-session parts
    return PrepareResult(betas, n_trials, n_voxels, sessions, done_before, int((~is_test).sum()),
                         int(is_test.sum()), roi, labels, label_counts(atlases, mask))


def _assemble(path: Path, parts: list[Path], n_trials: int, n_voxels: int, roi: str) -> None:
    """The sessions' z-scored rows into one betas file, one session in memory at a time; renamed into place."""
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as handle:
        chunk_rows = max(1, min(n_trials, (1 << 20) // max(1, n_voxels * 4)))
        ds = handle.create_dataset("betas", shape=(n_trials, n_voxels), dtype="float32", chunks=(chunk_rows, n_voxels))
        start = 0
        for part in parts:
            session = np.load(part, mmap_mode="r")
            ds[start : start + len(session)] = session
            start += len(session)
        handle.attrs["source"] = f"brainbench data prepare nsd: ROI {roi}, /300, z-scored per voxel per session"
    os.replace(tmp, path)


def describe(result: PrepareResult) -> dict[str, Any]:
    return {
        "betas": str(result.betas),
        "trials": result.n_trials,
        "voxels": result.n_voxels,
        "sessions": len(result.sessions),
        "sessions already done": len(result.sessions_done_before),
        "train trials": result.train_trials,
        "test trials (shared images)": result.test_trials,
        "roi": result.roi,
        "voxel labels": f"{result.voxel_labels} ("
        + "; ".join(f"{atlas}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                    for atlas, counts in result.label_counts.items())
        + ")",
    }
