"""Silent wrong NSD input becomes a clear error: two trials on one betas row, integer (raw) betas.
Folders are written with h5py and webdataset's TarWriter (tests/nsd_fixtures.py), not brainbench's writers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from brainbench.errors import DataError
from brainbench_nsd.dataset import open_nsd
from tests.nsd_fixtures import _write_shard, write_mindeye2_release


def test_two_trials_on_one_betas_row_are_refused(tmp_path):
    release = write_mindeye2_release(tmp_path / "r")
    train = release.behav[1]["train"].copy()
    test_row = int(release.behav[1]["new_test"][0, 5])
    train[0, 5] = test_row  # a training trial pointing at a test trial's betas: leakage
    _write_shard(release.root / "wds" / "subj01" / "train" / "0.tar", train[train[:, 2] == train[0, 2]], 0)
    dataset = open_nsd(release.root)
    with pytest.raises(DataError, match=rf"betas row\(s\) are claimed by more than one trial, e\.g\. row {test_row} "
                                        r"by (train|test) \(image \d+\) and (train|test)"):
        dataset.trials(1, "train")


def test_integer_betas_are_named_as_raw_nsd_with_the_way_to_prepare_them(tmp_path):
    release = write_mindeye2_release(tmp_path / "r")
    path = release.root / "betas_all_subj01_fp32_renorm.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("betas", data=(release.betas[1] * 300).astype(np.int16))
    with pytest.raises(DataError, match=r"holds int16 values.*brainbench data prepare nsd"):
        open_nsd(release.root).trials(1, "train")


def test_data_inspect_calls_an_empty_train_split_a_problem(tmp_path):
    from tests.conftest import run_cli

    with h5py.File(tmp_path / "betas_all_subj01_fp32_renorm.hdf5", "w") as f:
        f.create_dataset("betas", data=np.random.default_rng(0).normal(size=(30, 20)).astype(np.float32))
    rows = "".join(f"{t % 10},{t},1,test\n" for t in range(30))  # every trial in the test split
    (tmp_path / "trials_subj01.csv").write_text("image_index,trial_index,session,split\n" + rows)
    inspected = run_cli("data", "inspect", str(tmp_path), env={"COLUMNS": "200"}, timeout=300)
    assert inspected.returncode == 2, inspected.stdout + inspected.stderr
    assert "subject 1, split train: no trials; a run on this subject cannot start" in inspected.stdout
    assert "no problems found" not in inspected.stdout
