"""Staged and streamed batches: same batches for the same seed, HDF5 streaming, budget, prefetch thread."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from brainbench.arrays import RowIndexed
from brainbench.errors import DataError
from brainbench.interfaces import TrainSettings
from brainbench.staging import (
    STAGING_ENV,
    StagedSource,
    StreamingSource,
    choose_mode,
    epoch_order,
    make_batch_source,
    read_rows,
    stage_array,
    staging_bytes,
    steps_per_epoch,
)
from brainbench.training import train_torch_encoder
from tests.test_training import RecordingReporter, TinyEncoder, assert_same_weights, make_fit_data, weights_of

CPU = torch.device("cpu")


@pytest.fixture
def hdf5_split(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    voxels = rng.normal(size=(53, 6)).astype(np.float32)
    targets = rng.normal(size=(53, 2, 3)).astype(np.float32)
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("voxels", data=voxels, chunks=(8, 6))
        handle.create_dataset("targets", data=targets, chunks=(8, 2, 3))
    return path, voxels, targets


def test_staged_and_streamed_hdf5_give_identical_batches(hdf5_split):
    path, voxels, targets = hdf5_split
    staged = StagedSource(torch.from_numpy(voxels), torch.from_numpy(targets), batch_size=10, seed=5)
    with h5py.File(path, "r") as handle:
        streamed = StreamingSource(handle["voxels"], handle["targets"], 10, CPU, seed=5)
        for epoch in range(3):
            staged_batches = list(staged.batches(epoch))
            streamed_batches = list(streamed.batches(epoch))
            assert len(staged_batches) == len(streamed_batches) == 5  # 53 // 10, partial batch dropped
            for (sv, st), (fv, ft) in zip(staged_batches, streamed_batches, strict=True):
                assert torch.equal(sv, fv) and torch.equal(st, ft)
            rows = torch.cat([batch[0] for batch in staged_batches])
            assert len({tuple(row.tolist()) for row in rows}) == 50  # no row twice within an epoch
    first, second = list(staged.batches(0)), list(staged.batches(1))
    assert not torch.equal(first[0][0], second[0][0])  # a new order each epoch


def test_epoch_order_depends_on_seed_and_epoch_only():
    torch.manual_seed(0)
    a = epoch_order(100, seed=1, epoch=2)
    torch.manual_seed(123)  # global RNG state must not matter
    assert torch.equal(a, epoch_order(100, seed=1, epoch=2))
    assert not torch.equal(a, epoch_order(100, seed=1, epoch=3))
    assert not torch.equal(a, epoch_order(100, seed=2, epoch=2))
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(epoch_order(5, 1, 2, shuffle=False), torch.arange(5))


def test_steps_per_epoch_drops_only_a_partial_last_batch():
    assert steps_per_epoch(53, 10, drop_last=True) == 5
    assert steps_per_epoch(53, 10, drop_last=False) == 6
    assert steps_per_epoch(7, 10, drop_last=True) == 1  # smaller than one batch: keep it whole
    assert steps_per_epoch(0, 10, drop_last=True) == 0


def test_read_rows_restores_any_order_from_hdf5(hdf5_split):
    path, voxels, _ = hdf5_split
    rows = np.array([40, 3, 17, 0, 52, 8])
    with h5py.File(path, "r") as handle:
        assert np.array_equal(read_rows(handle["voxels"], rows), voxels[rows])
        assert np.array_equal(stage_array(handle["voxels"], CPU).numpy(), voxels)


def test_budget_decides_between_staging_and_streaming(hdf5_split, monkeypatch):
    path, voxels, targets = hdf5_split
    assert choose_mode(voxels, targets, CPU, budget_fraction=0.5) == "device"
    assert choose_mode(voxels, targets, CPU, budget_fraction=1e-12) == "stream"
    # bf16 targets take half the bytes of fp32 ones
    monkeypatch.setattr("brainbench.staging.free_memory_bytes", lambda device: 53 * (6 * 4 + 6 * 2))
    assert choose_mode(voxels, targets, CPU, target_dtype=torch.bfloat16, budget_fraction=1.0) == "device"
    assert choose_mode(voxels, targets, CPU, target_dtype=torch.float32, budget_fraction=1.0) == "stream"
    monkeypatch.setenv(STAGING_ENV, "stream")
    with h5py.File(path, "r") as handle:
        assert isinstance(make_batch_source(handle["voxels"], handle["targets"], 8, CPU), StreamingSource)
    monkeypatch.setenv(STAGING_ENV, "device")
    assert isinstance(make_batch_source(voxels, targets, 8, CPU), StagedSource)


def test_row_indexed_targets_are_staged_once_per_stimulus_and_give_the_same_batches():
    rng = np.random.default_rng(3)
    distinct = rng.normal(size=(9, 2, 3)).astype(np.float32)
    index = rng.integers(0, 9, size=40)
    voxels = rng.normal(size=(40, 6)).astype(np.float32)
    view = RowIndexed(distinct, index)

    source = make_batch_source(voxels, view, 8, CPU, seed=2, mode="device")
    assert isinstance(source, StagedSource) and source.targets.shape == (9, 2, 3)  # not 40 rows
    expanded = StagedSource(torch.from_numpy(voxels), torch.from_numpy(distinct[index]), 8, seed=2)
    streamed = StreamingSource(voxels, view, 8, CPU, seed=2)
    for epoch in range(2):
        for (v, t), (ev, et), (sv, st) in zip(
            source.batches(epoch), expanded.batches(epoch), streamed.batches(epoch), strict=True
        ):
            assert torch.equal(v, ev) and torch.equal(v, sv) and torch.equal(t, et) and torch.equal(t, st)
    # the memory budget counts the distinct rows and the index, not the expanded array
    assert staging_bytes(voxels, view, torch.float32) == 40 * 6 * 4 + 9 * 6 * 4 + 40 * 8
    assert staging_bytes(voxels, distinct[index], torch.float32) == 40 * 6 * 4 + 40 * 6 * 4


def test_staged_source_refuses_mismatched_rows():
    with pytest.raises(DataError, match="5 voxel rows but 4 target rows"):
        StagedSource(torch.zeros(5, 2), torch.zeros(3, 2), 2, target_rows=torch.zeros(4, dtype=torch.int64))


class FailingRows:
    """An array-like whose third read fails, like a truncated file."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.reads = data, 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __getitem__(self, index):
        self.reads += 1
        if self.reads == 3:
            raise OSError("unable to read rows")
        return self.data[index]


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "brainbench-prefetch" and t.is_alive()]


def test_prefetcher_hands_reader_errors_to_the_trainer(hdf5_split):
    _, voxels, targets = hdf5_split
    source = StreamingSource(FailingRows(voxels), targets, 10, CPU)
    batches = source.batches(0)
    next(batches)
    next(batches)
    with pytest.raises(OSError, match="unable to read rows"):
        next(batches)
    assert not _prefetch_threads()


def test_prefetcher_stops_when_the_trainer_stops_early(hdf5_split):
    _, voxels, targets = hdf5_split
    source = StreamingSource(voxels, targets, 2, CPU, prefetch=1)  # the reader blocks on a full queue
    batches = source.batches(0)
    next(batches)
    batches.close()
    assert not _prefetch_threads()


def test_training_is_identical_staged_or_streamed(monkeypatch):
    data = make_fit_data()
    monkeypatch.setenv(STAGING_ENV, "device")
    staged = train_torch_encoder(TinyEncoder(), data, TrainSettings(epochs=2), RecordingReporter())
    monkeypatch.setenv(STAGING_ENV, "stream")
    reporter = RecordingReporter()
    streamed = train_torch_encoder(TinyEncoder(), data, TrainSettings(epochs=2), reporter)
    assert any("data streamed" in message for message in reporter.messages)
    assert_same_weights(weights_of(staged), weights_of(streamed))
    assert staged.history == streamed.history
