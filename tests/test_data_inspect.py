"""``brainbench data inspect``: what each reader finds in NSD and GOD folders, and broken files named."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import webdataset as wds

from brainbench.cli.app import main
from brainbench.simulate.god import write_synthetic_god
from brainbench.simulate.nsd import SCALES, generate_synthetic_nsd
from brainbench_god.bdata import BDataFile
from brainbench_nsd.dataset import open_nsd, read_trial_table
from brainbench_nsd.litemind_npy import write_litemind_files
from brainbench_nsd.mindeye1 import write_mindeye1_shards
from tests.nsd_fixtures import write_mindeye2_release

TINY = SCALES["tiny"]


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps long messages at the terminal width


@pytest.fixture(scope="module")
def nsd_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nsd")
    generate_synthetic_nsd(root, "tiny", seed=0, subjects=(1,))
    return root


def _inspect(capsys, path: Path, *flags: str) -> tuple[int, dict | str]:
    code = main(["data", "inspect", str(path), *flags])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if "--json" in flags else out.out + out.err)


def _only(report: dict, name: str) -> dict:
    found = [item for item in report["found"] if item["dataset"] == name]
    assert len(found) == 1, report
    return found[0]


def test_simulated_nsd_folder(nsd_root, capsys):
    code, report = _inspect(capsys, nsd_root, "--json")
    assert code == 0
    item = _only(report, "nsd")
    assert item["describe"]["layout"] == "mindeye2" and item["problems"] == []
    (subject,) = item["subjects"]
    assert subject["subject"] == 1 and subject["voxels"] == TINY.voxels[1]
    table = read_trial_table(nsd_root / "trials_subj01.csv")
    for split in ("train", "test"):
        ids = table["image_index"][table["split"] == split]
        _, per_image = np.unique(ids, return_counts=True)
        found = subject["splits"][split]
        assert found["trials"] == len(ids) and found["images"] == len(per_image)
        expected = {str(r): int((per_image == r).sum()) for r in np.unique(per_image)}
        assert found["repeats"] == expected
    assert item["stored"]["clip-pooled"][1] == 768
    assert [m["dataset"] for m in report["not_matching"]] == ["god"]
    assert "no Subject{N}.h5 BData files" in report["not_matching"][0]["error"]


def test_other_nsd_layouts_are_recognised(nsd_root, tmp_path, capsys):
    source = open_nsd(nsd_root)
    splits = {split: source.trials(1, split) for split in ("train", "test")}
    write_mindeye1_shards(tmp_path / "me1", 1, splits)
    write_litemind_files(tmp_path / "lite", 1, splits["train"], splits["test"])
    for folder, layout, test_trials in (("me1", "mindeye1", TINY.test_trials), ("lite", "litemind", 30)):
        code, report = _inspect(capsys, tmp_path / folder, "--json")
        item = _only(report, "nsd")
        assert code == 0 and item["describe"]["layout"] == layout and item["problems"] == []
        assert item["subjects"][0]["splits"]["train"]["trials"] == TINY.train_trials
        assert item["subjects"][0]["splits"]["test"]["trials"] == test_trials


def test_god_folder_shows_keys_rois_and_data_types(tmp_path, capsys):
    files = write_synthetic_god(tmp_path, seed=0, subjects=(1,), scale="tiny")
    bdata = BDataFile.open(files[0])
    codes, counts = np.unique(bdata.column("DataType").astype(int), return_counts=True)
    code, report = _inspect(capsys, tmp_path, "--json")
    assert code == 0
    item = _only(report, "god")
    assert item["problems"] == [] and item["splits"] == ["train", "test", "imagery"]
    split_trials = {split: info["trials"] for split, info in item["subjects"][0]["splits"].items()}
    assert list(split_trials.values()) == counts.tolist()
    (details,) = item["bdata"]
    assert details["data_type_counts"] == {str(c): int(n) for c, n in zip(codes, counts, strict=True)}
    assert "DataType" in details["keys"] and details["rois"]["ROI_VC"] == item["subjects"][0]["voxels"]
    assert "no NSD layout recognised" in report["not_matching"][0]["error"]
    code, text = _inspect(capsys, tmp_path)
    assert code == 0 and "layout bdpy BData" in text and "ROI_VC (" in text and "no problems found" in text


def test_nan_betas_are_named(nsd_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(nsd_root, root)
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5", "a") as f:
        f["betas"][7, :5] = np.nan
    code, text = _inspect(capsys, root)
    assert code == 2
    assert "problem:" in text
    assert "betas_all_subj01_fp32_renorm.hdf5: dataset 'betas' has NaN or infinite values" in text
    assert "no dataset reader opened it without problems" in text


def test_trial_table_past_the_betas_is_named(nsd_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(nsd_root, root)
    path = root / "trials_subj01.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[3]["trial_index"] = str(TINY.train_trials + TINY.test_trials + 5)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, report = _inspect(capsys, root, "--json")
    assert code == 2
    (problem, *_) = _only(report, "nsd")["problems"]
    past = TINY.train_trials + TINY.test_trials + 5
    assert f"trials_subj01.csv: trial_index up to {past} points past the betas" in problem
    assert f"has {TINY.train_trials + TINY.test_trials} rows" in problem


def test_misshapen_litemind_file_is_named(nsd_root, tmp_path, capsys):
    source = open_nsd(nsd_root)
    write_litemind_files(tmp_path, 1, source.trials(1, "train"), source.trials(1, "test"))
    np.save(tmp_path / "subj01_stims_te.npy", np.arange(4))
    code, report = _inspect(capsys, tmp_path, "--json")
    assert code == 2
    problems = _only(report, "nsd")["problems"]
    assert any("subj01_stims_te.npy: shape (4,); expected (30,)" in p for p in problems), problems
    assert _only(report, "nsd")["subjects"][0]["splits"]["train"]["trials"] == TINY.train_trials


# ------------------------------------------------ folders written by the formats' own tools, via the CLI


def console_inspect(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """The installed ``brainbench`` console script, as a user runs it."""
    script = Path(sys.executable).with_name("brainbench")
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([str(script), "data", "inspect", str(path), *flags], capture_output=True, text=True,
                          env=env, timeout=300)


def test_mindeye2_release_folder_in_the_users_words(tmp_path):
    release = write_mindeye2_release(tmp_path / "release", subjects=(1, 2))
    shown = console_inspect(release.root)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    n_train, n_test = len(release.behav[1]["train"]), len(release.behav[1]["new_test"])
    train_images = len(np.unique(release.behav[1]["train"][:, 0]))
    assert "nsd: layout mindeye2, splits train, test" in text
    assert f"│ 1 │ 40 │ {n_train} / {train_images} / 3 │ {n_test} / 10 / 3 │" in text  # trials / images / sessions
    assert "10 x3" in text  # the test images' repeats, found from the image ids
    assert "trial lists subject 1: webdataset behav shards, subject 2: webdataset behav shards" in text
    assert "test split from wds/subj01/new_test/, wds/subj02/new_test/" in text
    assert "images coco_images_224_float16.hdf5 (120 images)" in text
    assert "shared images 10; test images among them 10 of 10" in text
    assert "nothing missing" in text and "no problems found" in text

    report = json.loads(console_inspect(release.root, "--json").stdout)
    item = _only(report, "nsd")
    assert [s["subject"] for s in item["subjects"]] == [1, 2]
    assert item["subjects"][0]["splits"]["test"] == {"trials": n_test, "images": 10, "repeats": {"3": 10},
                                                     "max_stimulus_id": 9, "sessions": 3}


def test_what_is_missing_is_said(tmp_path):
    release = write_mindeye2_release(tmp_path / "release", subjects=(1, 2), new_test=False, with_images=False)
    shutil.rmtree(release.root / "wds" / "subj02")
    text = " ".join(console_inspect(release.root).stdout.split())
    assert "missing: subject 1: wds/subj01/new_test/ (MindEye2's test set); testing on test/" in text
    assert ("missing: subject 2: betas_all_subj02_fp32_renorm.hdf5 is here but not which trial showed which "
            "image: expected wds/subj02/train/*.tar (MindEye2 release) or trials_subj02.csv") in text
    assert "missing: coco_images_224_float16.hdf5: no stimulus images" in text and "`brainbench targets build`" in text

    lite = tmp_path / "lite"
    lite.mkdir()
    np.save(lite / "subj01_nsdgeneral_betas_tr.npy", np.ones((6, 4), np.float32))
    np.save(lite / "subj01_stims_tr.npy", np.arange(6))
    text = " ".join(console_inspect(lite).stdout.split())
    assert "missing: subject 1: subj01_nsdgeneral_betas_ave_te.npy" in text
    assert "missing: subject 1: subj01_stims_te.npy" in text and "missing: clip_pooled.npy" in text

    me1 = tmp_path / "me1"
    (me1 / "train").mkdir(parents=True)
    with wds.TarWriter(str(me1 / "train" / "train_subj01_0.tar")) as sink:
        sink.write({"__key__": "s0", "nsdgeneral.npy": np.ones((3, 4), np.float32), "coco73k.npy": np.array([5])})
    text = " ".join(console_inspect(me1).stdout.split())
    assert "missing: subject 1: no test shards (test/test_subj01_N.tar)" in text
    assert "missing: stimulus images: no jpg members in the shards" in text
