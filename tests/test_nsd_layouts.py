"""The three NSD layouts, written from the same simulated data, load to the same arrays; bad files named."""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from brainbench.errors import DataError
from brainbench.repeats import group_mean
from brainbench.simulate.nsd import SCALES, generate_synthetic_nsd
from brainbench_nsd.dataset import open_nsd, read_trial_table
from brainbench_nsd.h5rows import RowView
from brainbench_nsd.litemind_npy import LiteMindNsd, write_litemind_files
from brainbench_nsd.mindeye1 import MindEye1Nsd, ShardRows, write_mindeye1_shards
from tests.nsd_fixtures import jpeg_bytes, write_mindeye2_release

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
        write_mindeye1_shards(roots["mindeye1"], subject, splits, numbers, samples_per_shard=40, synthetic=True)
        write_litemind_files(roots["litemind"], subject, splits["train"], splits["test"], features=pooled,
                             synthetic=True)
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
        assert open_nsd(root).synthetic and open_nsd(root).describe()["synthetic"] is True  # simulated, rewritten
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
    np.save(root / "subj02_nsdgeneral_betas_ave_te.npy", np.zeros((30, 7), np.float32))
    with pytest.raises(DataError, match=rf"subj02_nsdgeneral_betas_ave_te\.npy: shape \(30, 7\); expected \(n_images, "
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


# ----------------------------------------------------------------- fixtures written by the formats' own tools


def test_mindeye2_release_is_read_as_published(tmp_path):
    """betas HDF5 + wds/subjNN/{train,test,new_test} behav shards (webdataset's TarWriter), no trial table."""
    release = write_mindeye2_release(tmp_path / "release", subjects=(1, 2))
    ds = open_nsd(release.root)
    assert ds.describe()["layout"] == "mindeye2" and ds.subjects() == [1, 2] and not ds.synthetic
    for subject in (1, 2):
        betas = release.betas[subject]
        assert ds.n_voxels(subject) == betas.shape[1]
        for split, folder in (("train", "train"), ("test", "new_test")):
            behav = release.behav[subject][folder]
            order = np.argsort(behav[:, 5], kind="stable")
            trials = ds.trials(subject, split)
            # MindEye2's own indexing: betas[behav[:, 0, 5]] and images[behav[:, 0, 0]]
            np.testing.assert_array_equal(trials.stimulus_ids, behav[order, 0].astype(int))
            np.testing.assert_array_equal(trials.load(), betas[behav[order, 5].astype(int)])
            np.testing.assert_array_equal(trials.sessions, behav[order, 2].astype(int))
        test = ds.trials(subject, "test")
        _, repeats = np.unique(test.stimulus_ids, return_counts=True)
        assert (repeats == 3).all()  # repeats found from the image ids alone
    ids = np.array([3, 0, 7])
    np.testing.assert_allclose(ds.images(ids), release.images[ids].astype(np.float32))
    assert ds.describe()["missing"] == []

    older = open_nsd(release.root, test_split="test")  # the release's older test folder, chosen by option
    behav = release.behav[1]["test"]
    assert older.trials(1, "test").n_trials == len(behav) < ds.trials(1, "test").n_trials
    np.testing.assert_array_equal(older.trials(1, "test").stimulus_ids, behav[np.argsort(behav[:, 5]), 0])
    with pytest.raises(DataError, match="test_split must be one of auto, new_test, test"):
        open_nsd(release.root, test_split="val")


def test_mindeye2_release_without_new_test_or_images_says_what_is_missing(tmp_path):
    release = write_mindeye2_release(tmp_path / "r", new_test=False, with_images=False)
    ds = open_nsd(release.root)
    assert ds.trials(1, "test").n_trials == len(release.behav[1]["test"])  # falls back to test/
    assert ds.images(np.array([0])) is None
    missing = " | ".join(ds.describe()["missing"])
    assert "wds/subj01/new_test/ (MindEye2's test set); testing on test/" in missing
    assert "coco_images_224_float16.hdf5: no stimulus images" in missing
    with pytest.raises(DataError, match=r"new_test: no \*\.tar shards \(test_split='new_test'\)"):
        open_nsd(release.root, test_split="new_test").trials(1, "test")

    shutil.rmtree(release.root / "wds" / "subj01")
    bare = open_nsd(release.root)
    assert bare.subjects() == []
    assert "betas_all_subj01_fp32_renorm.hdf5 is here but not which trial showed which image" in bare.missing()[0]


def test_mindeye2_release_bad_behav_is_named(tmp_path):
    release = write_mindeye2_release(tmp_path / "r")
    shard = release.root / "wds" / "subj01" / "train" / "1.tar"
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "sample000000001", "behav.npy": np.zeros((1, 12), np.float32)})
    with pytest.raises(DataError, match=r"1\.tar: member sample000000001\.behav\.npy has shape \(1, 12\); "
                                        r"expected \(1, 17\)"):
        open_nsd(release.root).trials(1, "train")
    with wds.TarWriter(str(shard)) as sink:
        row = np.zeros((1, 17), np.float32)
        row[0, 5] = 10_000  # past the betas' rows
        sink.write({"__key__": "sample000000001", "behav.npy": row})
    with pytest.raises(DataError, match=r"trial_index up to 10000 points past the betas.*has 90 rows"):
        open_nsd(release.root).trials(1, "train")


def test_litemind_files_under_the_reference_names(tmp_path):
    """numpy files named as the Lite-Mind reference writes them (subjNN_nsdgeneral_betas_ave_te.npy)."""
    rng = np.random.default_rng(0)
    train, test = rng.standard_normal((20, 6)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    np.save(tmp_path / "subj01_nsdgeneral_betas_tr.npy", train)
    np.save(tmp_path / "subj01_stims_tr.npy", rng.integers(10, 100, 20))
    np.save(tmp_path / "subj01_nsdgeneral_betas_ave_te.npy", test)
    np.save(tmp_path / "subj01_stims_te.npy", np.arange(4))
    ds = open_nsd(tmp_path)
    assert ds.describe()["layout"] == "litemind" and not ds.synthetic  # files a lab wrote: real data
    np.testing.assert_array_equal(ds.trials(1, "test").load(), test)
    np.testing.assert_array_equal(ds.trials(1, "train").load(), train)
    (tmp_path / "subj01_nsdgeneral_betas_ave_te.npy").rename(tmp_path / "subj01_betas_ave_te.npy")
    np.testing.assert_array_equal(open_nsd(tmp_path).trials(1, "test").load(), test)  # the older name still read


def test_mindeye1_shards_from_webdataset_with_jpg_images(tmp_path):
    """MindEye1 shards written by webdataset's TarWriter; the jpg members decode with Pillow."""
    rng = np.random.default_rng(1)
    pictures, voxels = {}, {}
    for split, ids in (("train", range(10, 16)), ("test", range(3))):
        path = tmp_path / split / f"{split}_subj01_0.tar"
        path.parent.mkdir(parents=True)
        with wds.TarWriter(str(path)) as sink:
            for k, image_id in enumerate(ids):
                data, decoded = jpeg_bytes(rng)
                pictures[image_id], voxels[image_id] = decoded, rng.standard_normal((3, 5)).astype(np.float32)
                sink.write({
                    "__key__": f"sample{k:09d}",
                    "nsdgeneral.npy": voxels[image_id],
                    "coco73k.npy": np.array([image_id]),
                    "trial.npy": np.arange(3) + 3 * k + (0 if split == "train" else 100),
                    "jpg": data,  # bytes are stored as they are
                })
    ds = open_nsd(tmp_path)
    assert ds.describe()["layout"] == "mindeye1" and ds.subjects() == [1] and not ds.synthetic
    test = ds.trials(1, "test")
    np.testing.assert_array_equal(test.load()[test.stimulus_ids == 2], voxels[2])
    images = ds.images(np.array([12, 0]))
    assert images.shape == (2, 3, 16, 16) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], pictures[12].transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(images[1], pictures[0].transpose(2, 0, 1) / 255.0, atol=1e-6)
    with pytest.raises(DataError, match="no shard holds an image .* 73k image id 99"):
        ds.images(np.array([99]))
