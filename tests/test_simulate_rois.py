"""The simulated anatomy as NSD publishes it: ROI volumes read back with nibabel, NSD's voxel order, 3-D
structure, NSD-style noise statistics, and GOD subjects written one at a time."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from brainbench.noise_ceiling import ceiling_percent, noise_ceiling
from brainbench.simulate.anatomy import NSD_VOLUME, make_anatomy
from brainbench.simulate.nsd import SCALES, generate_synthetic_nsd

nib = pytest.importorskip("nibabel")

PRF = {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
STREAMS = {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral", 6: "lateral", 7: "parietal"}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    generate_synthetic_nsd(root, "tiny", seed=4, subjects=(1,))
    return root


def _roi(root, atlas):
    return nib.load(str(root / "nsddata/ppdata/subj01/func1pt8mm/roi" / f"{atlas}.nii.gz"))


def test_roi_volumes_are_nsd_style_and_match_the_betas(tiny_release):
    root = tiny_release
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5") as f:
        n_voxels = f["betas"].shape[1]
    general = np.asarray(_roi(root, "nsdgeneral").dataobj)
    assert general.shape == tuple(-(-n // 4) for n in NSD_VOLUME[1])  # NSD's grid, coarsened 4x at tiny scale
    assert set(np.unique(general)) == {-1, 0, 1}  # outside brain, brain, ROI
    assert (general == 1).sum() == n_voxels == SCALES["tiny"].voxels[1]
    with h5py.File(root / "rois_subj01.hdf5") as f:
        labels = {atlas: f[atlas][()] for atlas in ("nsdgeneral", "prf-visualrois", "streams")}
        names = {atlas: json.loads(f[atlas].attrs["labels"]) for atlas in labels}
        ijk = f["ijk"][()]
        assert tuple(f.attrs["volume_shape"]) == general.shape
    assert (labels["nsdgeneral"] == 1).all() and len(ijk) == n_voxels
    for atlas, expected in (("prf-visualrois", PRF), ("streams", STREAMS)):
        volume = np.asarray(_roi(root, atlas).dataobj)
        assert ((volume == -1) == (general == -1)).all()  # the same brain mask
        for value, name in expected.items():
            assert names[atlas][str(value)] == name
            # every label's voxel count in the NIfTI equals the per-voxel labels beside the betas
            assert (volume == value).sum() == (labels[atlas] == value).sum() > 0, (atlas, name)
        # and voxel by voxel, through the ijk indices
        np.testing.assert_array_equal(volume[tuple(ijk.T)], labels[atlas])
        ctab = (root / "nsddata/freesurfer/subj01/label" / f"{atlas}.mgz.ctab").read_text().split("\n")
        assert ctab[0] == "0 Unknown"
        assert {int(line.split()[0]): line.split()[1] for line in ctab if line} == {0: "Unknown", **expected}
    # V1..hV4 are early-visual: inside the early and midventral streams
    in_prf = labels["prf-visualrois"] > 0
    assert set(np.unique(labels["streams"][in_prf])) <= {1, 2, 3, 4}


def test_voxel_order_is_nsds_c_order_over_the_masked_volume(tiny_release):
    """Betas column j is the j-th nsdgeneral voxel in C order over the (Z, Y, X) array (h5py's view)."""
    general = np.asarray(_roi(tiny_release, "nsdgeneral").dataobj)  # nibabel: (X, Y, Z)
    with h5py.File(tiny_release / "rois_subj01.hdf5") as f:
        ijk = f["ijk"][()]
    np.testing.assert_array_equal(ijk, np.argwhere(general.T == 1)[:, ::-1])
    flat = np.ravel_multi_index(tuple(ijk[:, ::-1].T), general.T.shape)
    assert (np.diff(flat) > 0).all()  # strictly increasing C-order index
    # X varies fastest: most column neighbours are X neighbours, and some jump rows/slices
    steps = np.abs(np.diff(ijk, axis=0))
    assert (steps[:, 1:] == 0).all(axis=1).mean() > 0.5
    assert (steps[:, 2] > 0).any()


def test_responses_are_smooth_in_3d_not_along_the_voxel_index(tmp_path):
    """Voxels adjacent in space along Z (far apart in column order) respond alike more than random pairs."""
    from brainbench.simulate.nsd import SyntheticNsd
    from brainbench.simulate.world import prior_stimuli

    sim = SyntheticNsd(tmp_path, "small", seed=4)  # the demo's 3.6 mm grid; nothing is written
    brain = sim.brain(1)
    signal = brain.signal(prior_stimuli(4, 400))
    ijk = brain.anatomy.ijk
    position = {tuple(v): i for i, v in enumerate(ijk.tolist())}
    pairs = [(i, position[(x, y, z + 1)]) for i, (x, y, z) in enumerate(ijk.tolist()) if (x, y, z + 1) in position]
    assert len(pairs) > 20
    far_in_order = [(a, b) for a, b in pairs if b - a > 10]
    assert len(far_in_order) > 0.8 * len(pairs)  # a Z neighbour is (nearly always) a slice away in column order
    corr = np.corrcoef(signal.T)
    neighbours = np.mean([corr[a, b] for a, b in far_in_order])
    gen = np.random.default_rng(0)
    random_pairs = gen.integers(0, len(ijk), size=(500, 2))
    background = np.mean([corr[a, b] for a, b in random_pairs if a != b])
    assert neighbours > background + 0.1, (neighbours, background)


def test_nsd_scale_anatomy_has_the_real_voxel_count():
    anatomy = make_anatomy(0, 1, 15724, NSD_VOLUME[1], 1.8)
    assert anatomy.n_voxels == 15724 and anatomy.shape_xyz == (81, 104, 83)
    assert (anatomy.volume("nsdgeneral") == 1).sum() == 15724


def test_ncsnr_follows_nsds_definition():
    """On data with a known signal and noise sd, the estimate recovers ncsnr = signal sd / noise sd."""
    gen = np.random.default_rng(0)
    n_images, repeats, snr = 4000, 3, np.array([0.3, 0.6, 1.0])
    signal = gen.standard_normal((n_images, 3)) * snr
    betas = np.repeat(signal, repeats, axis=0) + gen.standard_normal((n_images * repeats, 3))
    betas = (betas - betas.mean(0)) / betas.std(0)  # z-scored, as NSD's betas
    estimate = noise_ceiling(betas, np.repeat(np.arange(n_images), repeats)).ncsnr
    np.testing.assert_allclose(estimate, snr, atol=0.05)
    np.testing.assert_allclose(ceiling_percent(0.26, 1 / 3), 100 * 0.0676 / (0.0676 + 1 / 3))


def test_noise_statistics_are_nsd_like(tiny_release):
    """Median ncsnr of the nsdgeneral-like ROI near NSD's 0.26 (band 0.18-0.36 at this tiny size), with a
    long right tail, and ceilings rising with repeats."""
    from brainbench.simulate.stats import noise_table

    rows = {(r["atlas"], r["roi"]): r for r in noise_table(tiny_release, 1)}
    general = rows[("nsdgeneral", "nsdgeneral")]
    assert 0.18 < general["median_ncsnr"] < 0.36, general
    assert general["p90_ncsnr"] > 1.6 * general["median_ncsnr"]  # long right tail
    assert general["nc1"] < general["nc3"] < 40
    assert {name for _, name in rows} >= set(PRF.values()) | set(STREAMS.values())


def test_the_stats_command_prints_the_table(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("simulate", "stats", "--scale", "tiny", "--json", "--root", str(tmp_path / "sim"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {r["roi"] for r in report["rois"]} >= {"nsdgeneral", "V1v", "hV4", "ventral", "parietal"}
    assert (tmp_path / "sim" / "rois_subj01.hdf5").exists()


def test_god_subjects_are_written_one_at_a_time(tmp_path):
    from brainbench_god.dataset import open_synthetic_god

    dataset = open_synthetic_god(tmp_path / "god", scale="tiny")
    assert dataset.subjects() == [1, 2, 3, 4, 5]
    assert not list((tmp_path / "god").glob("Subject*.h5"))  # opening writes no subject
    trials = dataset.trials(3, "train")
    assert [p.name for p in (tmp_path / "god").glob("Subject*.h5")] == ["Subject3.h5"]
    assert trials.voxels.shape[1] == dataset.n_voxels(3)
    dataset.trials(3, "test")
    assert len(list((tmp_path / "god").glob("Subject*.h5"))) == 1


def test_god_rois_partition_visual_cortex(tmp_path):
    bdpy = pytest.importorskip("bdpy")
    from brainbench.simulate.god import ROIS, write_synthetic_god

    path = write_synthetic_god(tmp_path, seed=1, subjects=(2,), scale="tiny")[0]
    data = bdpy.BData(str(path))
    sizes = {roi: data.select(f"ROI_{roi}").shape[1] for roi in ROIS}
    assert all(n > 0 for n in sizes.values()), sizes
    assert sum(sizes.values()) == data.select("ROI_VC").shape[1]
    assert data.select("ROI_LVC").shape[1] == sizes["V1"] + sizes["V2"] + sizes["V3"]



def test_a_one_subject_god_run_writes_one_subject_file(tmp_path):
    from brainbench.simulate.god import GENERATOR_VERSION
    from tests.conftest import run_cli

    home = tmp_path / "home"
    result = run_cli(
        "run", "ridge", "--task", "god-zeroshot", "--dataset-opt", "scale=tiny", "--subject", "2",
        env={"BRAINBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    folder = home / "synthetic" / f"god-tiny-v{GENERATOR_VERSION}-seed0"
    assert sorted(p.name for p in folder.iterdir()) == ["Subject2.h5", "stimuli.hdf5"]
