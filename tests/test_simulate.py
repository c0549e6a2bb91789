"""The simulator: NSD-like structure, determinism, fMRI-like reliability, atomic writes, GOD in BData.

ROI files, voxel order, noise ceilings and oracle ceilings are in test_simulate_rois.py and
test_simulate_ceilings.py."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest

from brainbench.simulate import nsd as sim_nsd
from brainbench.simulate.brain import split_half_reliability
from brainbench.simulate.god import write_synthetic_god
from brainbench.simulate.nsd import SyntheticNsd, generate_synthetic_nsd


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))


def _read(root, subject):
    with h5py.File(root / f"betas_all_subj{subject:02d}_fp32_renorm.hdf5") as f:
        betas = f["betas"][:]
    with open(root / f"trials_subj{subject:02d}.csv") as handle:
        rows = list(csv.DictReader(handle))
    table = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return betas, table


def test_tiny_nsd_has_nsd_structure(tmp_path):
    scale = sim_nsd.SCALES["tiny"]
    generate_synthetic_nsd(tmp_path, "tiny", seed=3, subjects=(1, 2))
    b1, t1 = _read(tmp_path, 1)
    b2, t2 = _read(tmp_path, 2)
    assert b1.shape == (scale.train_trials + scale.test_trials, scale.voxels[1])
    assert b2.shape[1] == scale.voxels[2] != b1.shape[1]
    for table in (t1, t2):
        test = table["split"] == "test"
        assert test.sum() == scale.test_trials
        ids, counts = np.unique(table["image_index"][test], return_counts=True)
        assert len(ids) == scale.n_test_images and set(counts) == {3}
        train_counts = np.unique(table["image_index"][~test], return_counts=True)[1]
        assert train_counts.min() >= 1 and train_counts.max() <= 3
    # test images are shared by the subjects and never used for training
    assert set(t1["image_index"][t1["split"] == "test"]) == set(t2["image_index"][t2["split"] == "test"])
    assert not set(t1["image_index"][t1["split"] == "test"]) & set(t1["image_index"][t1["split"] == "train"])
    # per-session z-scoring: each voxel has mean 0 and sd 1 within each session
    sessions = t1["session"].astype(int)
    for session in np.unique(sessions):
        block = b1[sessions == session]
        np.testing.assert_allclose(block.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(block.std(axis=0), 1, atol=1e-3)
    assert (tmp_path / "brainbench_synthetic.json").exists()
    assert not (tmp_path / "betas_all_subj05_fp32_renorm.hdf5").exists()  # generated only when asked


def test_generation_is_deterministic_from_the_seed(tmp_path):
    generate_synthetic_nsd(tmp_path / "a", "tiny", seed=1)
    generate_synthetic_nsd(tmp_path / "b", "tiny", seed=1)
    generate_synthetic_nsd(tmp_path / "c", "tiny", seed=2)
    a, ta = _read(tmp_path / "a", 1)
    b, tb = _read(tmp_path / "b", 1)
    c, _ = _read(tmp_path / "c", 1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta["image_index"], tb["image_index"])
    assert not np.allclose(a, c)


def test_nsd_scale_has_the_real_counts():
    scale = sim_nsd.SCALES["nsd"]
    design = sim_nsd.make_design(scale, seed=0)
    trials = sim_nsd.subject_trials(scale, 0, design, 1)
    test = trials["split"] == "test"
    assert scale.voxels == {1: 15724, 2: 14278, 5: 13039, 7: 12682}
    assert (~test).sum() == 24980 and test.sum() == 2770
    assert len(np.unique(trials["image_index"][~test])) == 8859
    assert len(np.unique(trials["image_index"][test])) == 982
    assert trials["session"].max() == 37
    # subjects see their own training images, as in NSD
    assert not set(design.train_ids[1]) & set(design.train_ids[2])


def test_small_scale_behaves_like_fmri_under_ridge(tmp_path):
    """Reliability is heavy-tailed, and the data are decodable: ridge retrieves far above chance.

    Not a calibration: nothing in the simulator is tuned to a decoder's score (the noise is set from NSD's
    published ncsnr). The upper bound only says single-trial-noise data are not solved outright."""
    generate_synthetic_nsd(tmp_path, "small", seed=0)
    betas, table = _read(tmp_path, 1)
    images = table["image_index"].astype(int)
    test = table["split"] == "test"
    reliability = split_half_reliability(betas[test], images[test])
    assert np.median(reliability) < 0.15  # most voxels weak
    assert 0.005 < (reliability > 0.3).mean() < 0.3  # a few strong
    with h5py.File(tmp_path / "clip_targets.hdf5") as f:
        pooled = f["pooled"][:]
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-5)
    assert 0.2 < (pooled @ pooled.T).mean() < 0.7  # positive-ish cosines, as with CLIP
    x, y = betas[~test], pooled[images[~test]]
    weights = np.linalg.solve(x.T @ x + 1e4 * np.eye(x.shape[1]), x.T @ (y - y.mean(0)))
    ids, inverse = np.unique(images[test], return_inverse=True)
    averaged = np.zeros((len(ids), x.shape[1]))
    np.add.at(averaged, inverse, betas[test])
    averaged /= np.bincount(inverse)[:, None]
    scores = (averaged @ weights) @ pooled[ids].T
    top1 = (scores.argmax(axis=1) == np.arange(len(ids))).mean()
    assert 10 / 400 < top1 < 0.9, top1  # chance is 1/400


def test_interrupted_generation_leaves_no_complete_looking_file(tmp_path, monkeypatch):
    def explode(self, path, brain, trials):
        with h5py.File(path, "w") as f:
            f.create_dataset("betas", data=np.zeros((2, 2), np.float32))
        raise KeyboardInterrupt

    monkeypatch.setattr(SyntheticNsd, "_write_betas", explode)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_nsd(tmp_path, "tiny", seed=0)
    assert not (tmp_path / "betas_all_subj01_fp32_renorm.hdf5").exists()
    assert not (tmp_path / "trials_subj01.csv").exists()
    assert (tmp_path / "rois_subj01.hdf5").exists()  # written before the betas; the trial table marks completion
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    generate_synthetic_nsd(tmp_path, "tiny", seed=0)  # a later call completes it
    assert _read(tmp_path, 1)[0].shape[0] == sim_nsd.SCALES["tiny"].train_trials + sim_nsd.SCALES["tiny"].test_trials


def test_tokens_on_request(tmp_path):
    sim = SyntheticNsd(tmp_path, "tiny", seed=0)
    sim.ensure_common()
    with h5py.File(tmp_path / "clip_targets.hdf5") as f:
        assert "tokens" not in f
        pooled = f["pooled"][:]
    sim.ensure_common(tokens=True)
    with h5py.File(tmp_path / "clip_targets.hdf5") as f:
        tokens = f["tokens"]
        assert tokens.shape == (sim.design.n_images, 257, 768) and tokens.dtype == np.float16
        cls = tokens[:5, 0].astype(np.float32)
        np.testing.assert_array_equal(f["pooled"][:], pooled)
    cosine = (cls * pooled[:5]).sum(1) / np.linalg.norm(cls, axis=1)
    assert (cosine > 0.95).all()  # CLS close to the pooled embedding


def test_synthetic_god_in_bdata_layout_reads_with_bdpy(tmp_path):
    bdpy = pytest.importorskip("bdpy")
    paths = write_synthetic_god(tmp_path, seed=0, subjects=(1, 2), scale="tiny")
    assert [p.name for p in paths] == ["Subject1.h5", "Subject2.h5"]
    data = bdpy.BData(str(paths[0]))
    data_type = data.select("DataType")[:, 0]
    n_train, per_cat, n_test, reps, imagery, _ = (20, 4, 10, 5, 3, 300)
    assert (data_type == 1).sum() == n_train * per_cat
    assert (data_type == 2).sum() == n_test * reps
    assert (data_type == 3).sum() == n_test * imagery
    vc = data.select("ROI_VC")
    assert (
        vc.shape[1]
        == data.select("ROI_LVC").shape[1] + data.select("ROI_V4").shape[1] + data.select("ROI_HVC").shape[1]
    )
    assert np.isfinite(vc).all()
    labels = data.select("Label")[:, 0].astype(int)
    images = data.select("image_index")[:, 0].astype(int)
    with h5py.File(tmp_path / "stimuli.hdf5") as f:
        category = f["category"][:]
        pooled = f["clip_pooled"][:]
        text = f["text_embeddings"][:]
        names = [n.decode() for n in f["category_names"][:]]
        train_cats, test_cats = set(f["train_categories"][:]), set(f["test_categories"][:])
    np.testing.assert_array_equal(category[images], labels)  # Label is the category of the image shown
    assert not train_cats & test_cats  # zero-shot: test categories never trained
    assert set(labels[data_type == 1]) == train_cats and set(labels[data_type == 2]) == test_cats
    assert len(names) == 30 and text.shape == (30, 4, 768)
    # modality gap: image-text cosines lower than image-image, but the right class still scores highest
    text_mean = text.mean(1)
    text_mean /= np.linalg.norm(text_mean, axis=1, keepdims=True)
    image_text = pooled @ text_mean.T
    assert image_text.mean() < (pooled @ pooled.T).mean() - 0.05
    # true image embeddings classify far above chance (1/30) by class text; below 1: images vary within a class
    # (appearance, conjunctions, nuisance) beyond what a class name says
    assert (image_text.argmax(1) == category).mean() > 0.5
    # subjects differ in voxel count
    assert bdpy.BData(str(paths[1])).select("ROI_VC").shape[1] != vc.shape[1]
