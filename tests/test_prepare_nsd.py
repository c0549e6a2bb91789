"""``brainbench data prepare nsd``: a fake raw-NSD tree (nibabel, scipy.io, h5py) -> the MindEye2 layout,
read back by the MindEye2 reader; resumable after an interruption; atomic output; clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from brainbench.errors import DataError
from brainbench_nsd.dataset import open_nsd
from brainbench_nsd.prepare import prepare_nsd
from tests.nsd_fixtures import expected_prepared_betas, write_fake_nsd

TRIALS_PER_SESSION = 20


def console_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("brainbench")
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=300)


def test_prepared_output_reads_back_as_the_expected_zscored_betas(tmp_path):
    fake = write_fake_nsd(tmp_path / "NSD", sessions=3, trials_per_session=TRIALS_PER_SESSION)
    out = tmp_path / "prepared"
    done = console_script("data", "prepare", "nsd", str(fake.root), str(out), "--subject", "1",
                          "--trials-per-session", str(TRIALS_PER_SESSION), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert "trials: 60" in said and f"voxels: {int(fake.mask.sum())}" in said and "sessions: 3" in said

    expected = expected_prepared_betas(fake)
    ds = open_nsd(out)
    assert ds.describe()["layout"] == "mindeye2" and ds.subjects() == [1] and not ds.synthetic
    assert ds.n_voxels(1) == int(fake.mask.sum())
    is_test = fake.shared[fake.image_of_trial]
    for split, rows in (("train", np.flatnonzero(~is_test)), ("test", np.flatnonzero(is_test))):
        trials = ds.trials(1, split)
        np.testing.assert_array_equal(trials.stimulus_ids, fake.image_of_trial[rows])
        np.testing.assert_allclose(trials.load(), expected[rows], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(trials.sessions, rows // TRIALS_PER_SESSION + 1)
    test = ds.trials(1, "test")
    assert sorted(np.unique(test.stimulus_ids, return_counts=True)[1]) == [3] * 5  # the shared images' repeats
    with h5py.File(out / "betas_all_subj01_fp32_renorm.hdf5") as f:
        betas = f["betas"][:]
    session_two = betas[TRIALS_PER_SESSION : 2 * TRIALS_PER_SESSION]
    np.testing.assert_allclose(session_two.mean(axis=0), 0, atol=1e-5)  # z-scored within the session
    np.testing.assert_allclose(session_two.std(axis=0), 1, atol=1e-4)
    np.testing.assert_array_equal(np.load(out / "shared1000.npy"), fake.shared)
    assert not list(out.rglob("*.tmp")) and not (out / ".prepare_subj01").exists()


def test_an_interrupted_build_resumes_and_skips_finished_sessions(tmp_path):
    fake = write_fake_nsd(tmp_path / "NSD", sessions=4, trials_per_session=TRIALS_PER_SESSION, seed=2)
    out = tmp_path / "prepared"

    def stop_after_two(done, total, session, skipped):
        if done == 2:
            raise KeyboardInterrupt  # what Ctrl-C does mid-build

    with pytest.raises(KeyboardInterrupt):
        prepare_nsd(fake.root, out, 1, trials_per_session=TRIALS_PER_SESSION, progress=stop_after_two)
    assert not (out / "betas_all_subj01_fp32_renorm.hdf5").exists()  # no half-written output under its name
    assert sorted(p.name for p in (out / ".prepare_subj01").glob("session_*.npy")) == [
        "session_01.npy", "session_02.npy"]

    seen = []
    result = prepare_nsd(fake.root, out, 1, trials_per_session=TRIALS_PER_SESSION,
                         progress=lambda *args: seen.append(args))
    assert result.sessions_done_before == [1, 2]
    assert [(session, skipped) for _, _, session, skipped in seen] == [(1, True), (2, True), (3, False), (4, False)]
    with h5py.File(result.betas) as f:
        np.testing.assert_allclose(f["betas"][:], expected_prepared_betas(fake), rtol=1e-5, atol=1e-5)


def test_mismatched_files_are_named(tmp_path):
    fake = write_fake_nsd(tmp_path / "NSD", sessions=2, trials_per_session=TRIALS_PER_SESSION)
    with pytest.raises(DataError, match=r"betas_session01\.hdf5: 'betas' holds 20 trials; expected 750"):
        prepare_nsd(fake.root, tmp_path / "a", 1)
    design = fake.root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    full = scipy.io.loadmat(design)
    scipy.io.savemat(design, {**{k: full[k] for k in ("subjectim", "sharedix")},
                              "masterordering": full["masterordering"][:, :30]})
    with pytest.raises(DataError, match=r"'masterordering' lists 30 trials; 2 sessions x 20 need 40"):
        prepare_nsd(fake.root, tmp_path / "b", 1, trials_per_session=TRIALS_PER_SESSION)
    scipy.io.savemat(design, {k: full[k] for k in ("subjectim", "sharedix", "masterordering")})

    session = fake.root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.hdf5"
    with h5py.File(session, "w") as f:
        f.create_dataset("betas", data=np.zeros((TRIALS_PER_SESSION, 6, 7, 8), np.int16))  # NIfTI order, not reversed
    with pytest.raises(DataError, match=r"betas_session02\.hdf5: 'betas' has shape \(20, 6, 7, 8\); expected "
                                        r"\(trials, 8, 7, 6\)"):
        prepare_nsd(fake.root, tmp_path / "c", 1, trials_per_session=TRIALS_PER_SESSION)

    scipy.io.savemat(design, {"masterordering": np.ones((1, 40)), "subjectim": np.ones((8, 30))})
    failed = console_script("data", "prepare", "nsd", str(fake.root), str(tmp_path / "d"), "--subject", "1",
                            "--trials-per-session", str(TRIALS_PER_SESSION), tmp_path=tmp_path)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "nsd_expdesign.mat: variable 'sharedix' missing" in " ".join(failed.stderr.split())
