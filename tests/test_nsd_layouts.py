"""The three NSD layouts, written from the same simulated data, load to the same arrays; bad files named."""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from brainbench.errors import DataError
from brainbench.repeats import group_mean
from brainbench.simulate.nsd import SCALES, generate_synthetic_nsd
from brainbench_nsd.dataset import open_nsd, read_trial_table
from brainbench_nsd.h5rows import RowView
from brainbench_nsd.litemind_npy import LiteMindNsd, write_litemind_files
from brainbench_nsd.mindeye1 import MindEye1Nsd, ShardRows, write_mindeye1_shards

SUBJECTS = (1, 2)
TINY = SCALES["tiny"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """One simulated NSD in the MindEye2 layout, rewritten as MindEye1 shards and Lite-Mind files."""
    base = tmp_path_factory.mktemp("layouts")
    roots = {name: base / name for name in ("mindeye2", "mindeye1", "litemind")}
    generate_synthetic_nsd(roots["mindeye2"], "tiny", seed=0, subjects=SUBJECTS)
    source = open_nsd(roots["mindeye2"])
    pooled = np.asarray(source.stored_embeddings("clip-pooled")[:])
    for subject in SUBJECTS:
        splits = {split: source.trials(subject, split) for split in ("train", "test")}
        table = read_trial_table(roots["mindeye2"] / f"trials_subj{subject:02d}.csv")
        numbers = {split: np.sort(table["trial_index"][table["split"] == split]) for split in splits}
        write_mindeye1_shards(roots["mindeye1"], subject, splits, numbers, samples_per_shard=40)
        write_litemind_files(roots["litemind"], subject, splits["train"], splits["test"], features=pooled)
    source.close()
    return roots


def _open_all(layouts: dict[str, Path]) -> dict[str, object]:
    return {
        "mindeye2": open_nsd(layouts["mindeye2"]),
        "mindeye1": open_nsd(layouts["mindeye1"], trials_per_session=TINY.trials_per_session),
        "litemind": open_nsd(layouts["litemind"]),
    }


def _by_stimulus(trials) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(trials.stimulus_ids, kind="stable")  # repeats stay in trial order
    return trials.stimulus_ids[order], trials.load()[order]


def test_layouts_are_detected_and_named(layouts):
    for layout, root in layouts.items():
        assert open_nsd(root).describe()["layout"] == layout
        assert open_nsd(root, layout=layout).subjects() == list(SUBJECTS)
    assert len(list((layouts["mindeye1"] / "train").glob("*.tar"))) > 2  # several shards per subject
    with pytest.raises(DataError, match="no subjNN_nsdgeneral_betas_tr.npy"):
        open_nsd(layouts["mindeye1"], layout="litemind")
    with pytest.raises(DataError, match="unknown NSD layout 'mindeye3'"):
        open_nsd(layouts["mindeye1"], layout="mindeye3")


def test_training_trials_are_equal_per_stimulus(layouts):
    datasets = _open_all(layouts)
    for subject in SUBJECTS:
        voxels = {name: ds.n_voxels(subject) for name, ds in datasets.items()}
        assert set(voxels.values()) == {TINY.voxels[subject]}
        reference_ids, reference = _by_stimulus(datasets["mindeye2"].trials(subject, "train"))
        assert len(reference_ids) == TINY.train_trials
        for name in ("mindeye1", "litemind"):
            ids, rows = _by_stimulus(datasets[name].trials(subject, "train"))
            np.testing.assert_array_equal(ids, reference_ids, err_msg=name)
            np.testing.assert_array_equal(rows, reference, err_msg=name)
    # MindEye1 keeps trial numbers, so trial order and sessions match MindEye2's exactly.
    me1, me2 = datasets["mindeye1"].trials(1, "train"), datasets["mindeye2"].trials(1, "train")
    np.testing.assert_array_equal(me1.stimulus_ids, me2.stimulus_ids)
    np.testing.assert_array_equal(me1.sessions, me2.sessions)


def test_test_split_per_image_averages_are_equal(layouts):
    datasets = _open_all(layouts)
    averaged = open_nsd(layouts["mindeye1"], average_repeats=True)
    for subject in SUBJECTS:
        test = datasets["mindeye2"].trials(subject, "test")
        reference, reference_ids = group_mean(test.load(), test.stimulus_ids)
        assert len(reference_ids) == TINY.n_test_images
        me1 = datasets["mindeye1"].trials(subject, "test")
        assert me1.n_trials == test.n_trials  # one row per repeat; NaN padding rows dropped
        means, ids = group_mean(me1.load(), me1.stimulus_ids)
        np.testing.assert_array_equal(ids, reference_ids)
        np.testing.assert_array_equal(means, reference)
        lite = datasets["litemind"].trials(subject, "test")
        assert lite.n_trials == len(reference_ids)  # already one row per image
        np.testing.assert_array_equal(lite.stimulus_ids, reference_ids)
        np.testing.assert_array_equal(lite.load(), reference)
        per_image = averaged.trials(subject, "test")
        assert per_image.n_trials == len(reference_ids)
        order = np.argsort(per_image.stimulus_ids)
        np.testing.assert_array_equal(per_image.stimulus_ids[order], reference_ids)
        np.testing.assert_allclose(per_image.load()[order], reference, rtol=1e-6, atol=1e-6)


def test_reads_are_lazy_and_survive_pickling(layouts):
    datasets = _open_all(layouts)
    me1, lite = datasets["mindeye1"].trials(2, "train"), datasets["litemind"].trials(2, "train")
    assert isinstance(me1.voxels, RowView) and isinstance(me1.voxels.dataset, ShardRows)
    assert isinstance(lite.voxels, RowView) and isinstance(lite.voxels.dataset, np.memmap)
    rows = np.array([250, 3, 3, 120])
    full = me1.load()
    np.testing.assert_array_equal(me1.load(rows), full[rows])
    np.testing.assert_array_equal(lite.load(rows), lite.load()[rows])
    clone = pickle.loads(pickle.dumps(datasets["mindeye1"]))  # e.g. sent to a worker process
    np.testing.assert_array_equal(clone.trials(2, "train").load(), full)
    # Above the in-memory limit the voxels are read from the tar files on each access.
    from_disk = MindEye1Nsd(layouts["mindeye1"], in_memory_bytes=0)
    streamed = from_disk.trials(2, "train")
    assert from_disk._index(2, "train").in_memory is None
    np.testing.assert_array_equal(streamed.load(rows), full[rows])
    np.testing.assert_array_equal(streamed.load(), full)
    averaged = MindEye1Nsd(layouts["mindeye1"], average_repeats=True)
    streamed_means = MindEye1Nsd(layouts["mindeye1"], average_repeats=True, in_memory_bytes=0)
    np.testing.assert_array_equal(streamed_means.trials(2, "test").load(), averaged.trials(2, "test").load())


def test_litemind_features_are_stored_embeddings(layouts):
    datasets = _open_all(layouts)
    pooled = datasets["litemind"].stored_embeddings("clip-pooled")
    reference = datasets["mindeye2"].stored_embeddings("clip-pooled")[:]
    np.testing.assert_array_equal(np.asarray(pooled), reference)
    assert datasets["litemind"].stored_embeddings("clip-tokens") is None
    assert datasets["mindeye1"].stored_embeddings("clip-pooled") is None


# ------------------------------------------------------------------------------------------ bad files


def _copy(layouts, name, tmp_path) -> Path:
    root = tmp_path / name
    shutil.copytree(layouts[name], root)
    return root


def _write_shard(path: Path, members: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, array in members.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            info = tarfile.TarInfo(name)
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)


def test_litemind_missing_and_misshapen_files_are_named(layouts, tmp_path):
    root = _copy(layouts, "litemind", tmp_path)
    (root / "subj02_stims_te.npy").unlink()
    with pytest.raises(DataError, match=r"subj02_stims_te\.npy: file not found; Lite-Mind layout.*_stims_te"):
        LiteMindNsd(root).trials(2, "test")
    np.save(root / "subj01_stims_tr.npy", np.arange(10))
    expected = rf"subj01_stims_tr\.npy: shape \(10,\); expected \({TINY.train_trials},\)"
    with pytest.raises(DataError, match=expected):
        LiteMindNsd(root).trials(1, "train")
    np.save(root / "subj02_betas_ave_te.npy", np.zeros((30, 7), np.float32))
    with pytest.raises(DataError, match=rf"subj02_betas_ave_te\.npy: shape \(30, 7\); expected \(n_images, "
                                        rf"{TINY.voxels[2]}\)"):
        LiteMindNsd(root).trials(2, "test")
    betas = np.load(root / "subj02_nsdgeneral_betas_tr.npy")
    betas[17, 3] = np.nan
    np.save(root / "subj02_nsdgeneral_betas_tr.npy", betas)
    with pytest.raises(DataError, match=r"subj02_nsdgeneral_betas_tr\.npy: .*NaN or infinite.*at row 17"):
        LiteMindNsd(root).trials(2, "train").load()
    np.save(root / "clip_pooled.npy", np.zeros((5, 512), np.float32))
    with pytest.raises(DataError, match=r"clip_pooled\.npy: shape \(5, 512\); expected \(n_images, 768\)"):
        LiteMindNsd(root).stored_embeddings("clip-pooled")


def test_mindeye1_missing_keys_and_bad_shapes_are_named(tmp_path):
    voxels = np.ones((3, 8), np.float32)
    good = {"s0.nsdgeneral.npy": voxels, "s0.coco73k.npy": np.array([5]), "s0.trial.npy": np.arange(3)}

    root = tmp_path / "no_image_id"
    _write_shard(root / "train" / "train_subj01_0.tar", {"s0.nsdgeneral.npy": voxels})
    with pytest.raises(DataError, match=r"train_subj01_0\.tar: sample 's0' has no s0\.coco73k\.npy"):
        MindEye1Nsd(root).trials(1, "train")

    root = tmp_path / "voxel_count"
    wrong = {"s1.nsdgeneral.npy": np.ones((3, 9), np.float32), "s1.coco73k.npy": np.array([6])}
    _write_shard(root / "train" / "train_subj01_0.tar", {**good, **wrong})
    with pytest.raises(DataError, match=r"s1\.nsdgeneral\.npy has 9 voxels; expected \(n_repeats, 8\)"):
        MindEye1Nsd(root).n_voxels(1)

    root = tmp_path / "nan_repeat"
    partial = voxels.copy()
    partial[1, 2] = np.nan
    _write_shard(root / "test" / "test_subj01_0.tar", {**good, "s0.nsdgeneral.npy": partial})
    with pytest.raises(DataError, match=r"s0\.nsdgeneral\.npy: NaN or infinite voxel values in a repeat"):
        MindEye1Nsd(root).trials(1, "test")

    root = tmp_path / "trial_count"
    _write_shard(root / "train" / "train_subj01_0.tar", {**good, "s0.trial.npy": np.arange(2)})
    with pytest.raises(DataError, match=r"s0\.trial\.npy holds 2 trial numbers; expected shape \(3,\)"):
        MindEye1Nsd(root).trials(1, "train")

    root = tmp_path / "no_split"
    _write_shard(root / "shard_subj01.tar", good)
    with pytest.raises(DataError, match=r"shard_subj01\.tar: cannot tell the split"):
        MindEye1Nsd(root)

    root = tmp_path / "compressed"
    (root / "train").mkdir(parents=True)
    with tarfile.open(root / "train" / "train_subj01_0.tar", "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("s0.coco73k.npy"), io.BytesIO(b""))
    with pytest.raises(DataError, match=r"train_subj01_0\.tar: not a readable uncompressed tar"):
        MindEye1Nsd(root).trials(1, "train")
    with pytest.raises(DataError, match=r"no test shards for subject 1 \(expected test/test_subj01_N\.tar\)"):
        MindEye1Nsd(root).trials(1, "test")


def test_mindeye1_val_shards_count_as_training(tmp_path):
    one = {"a.nsdgeneral.npy": np.full((3, 4), 2.0, np.float32), "a.coco73k.npy": np.array([11])}
    padded = np.zeros((3, 4), np.float32)
    padded[0] = 1.0  # rows 1 and 2 are zero padding for missing repeats
    two = {"b.nsdgeneral.npy": padded, "b.coco73k.npy": np.array([12])}
    _write_shard(tmp_path / "train" / "train_subj03_0.tar", one)
    _write_shard(tmp_path / "val" / "val_subj03_0.tar", two)
    ds = MindEye1Nsd(tmp_path)
    trials = ds.trials(3, "train")
    assert ds.subjects() == [3] and trials.sessions is None  # no trial numbers stored
    assert sorted(trials.stimulus_ids.tolist()) == [11, 11, 11, 12]
    np.testing.assert_array_equal(trials.load()[trials.stimulus_ids == 12], padded[:1])
