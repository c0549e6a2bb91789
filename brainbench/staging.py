"""Getting training batches onto the device: staged once when the split fits, streamed otherwise.

Both paths draw the same per-epoch permutation (a function of seed and epoch only) and cut it into the same
batches, so a run gives identical batches whichever path it takes.

- :class:`StagedSource`: the whole split lives on the device; a batch is an ``index_select`` there, with no
  host round trip per step.
- :class:`StreamingSource`: rows are read from an array-like (numpy, memmap, h5py dataset) by a background
  thread, a batch at a time, with indices sorted for HDF5 and the batch order restored afterwards.

``BRAINBENCH_STAGING=device|stream`` forces a path (benchmarks, tests); the default is ``auto``.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from brainbench.arrays import RowIndexed
from brainbench.devices import free_memory_bytes
from brainbench.errors import BrainbenchError, DataError
from brainbench.interfaces import ArrayLike
from brainbench.rows import read_rows

STAGING_ENV = "BRAINBENCH_STAGING"
#: Share of free device memory (or RAM) the staged split may take; the rest is for activations.
DEFAULT_BUDGET_FRACTION = 0.5
#: Rows copied per block when staging an on-disk array, so the host never holds the whole split twice.
STAGE_BLOCK_ROWS = 2048
#: Batches the streaming thread may read ahead.
PREFETCH_BATCHES = 3

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_order(n_samples: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """Row order of one epoch (CPU int64), a function of (seed, epoch) only, never of global RNG state."""
    if not shuffle:
        return torch.arange(n_samples, dtype=torch.int64)
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch)]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n_samples, generator=generator)


def steps_per_epoch(n_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch; a partial last batch is dropped only when a full one exists."""
    if n_samples == 0:
        return 0
    if drop_last and n_samples >= batch_size:
        return n_samples // batch_size
    return math.ceil(n_samples / batch_size)


def _row_nbytes(array: ArrayLike, dtype: torch.dtype) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


class BatchSource(ABC):
    """Batches of (voxels, targets) on ``device`` for each epoch."""

    mode: str = ""

    def __init__(
        self,
        n_samples: int,
        batch_size: int,
        device: torch.device,
        seed: int,
        shuffle: bool,
        drop_last: bool,
        repeat_groups: torch.Tensor | None = None,
    ) -> None:
        if batch_size < 1:
            raise BrainbenchError(f"batch size must be at least 1, got {batch_size}")
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        # (n_images, R) rows of each image's repeats: an epoch draws images, and step s of the epoch takes
        # repeat s % R of every image in its batch (MindEye1's training); None: an epoch draws rows
        self.repeat_groups = repeat_groups

    @property
    def n_draws(self) -> int:
        """What an epoch shuffles and batches: rows, or images when sampling one repeat per step."""
        return self.n_samples if self.repeat_groups is None else int(self.repeat_groups.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_draws, self.batch_size, self.drop_last)

    def step_rows(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """The rows of batch ``step`` of an epoch whose draw order is ``order``."""
        drawn = order[step * self.batch_size : (step + 1) * self.batch_size]
        if self.repeat_groups is None:
            return drawn
        groups = self.repeat_groups.to(drawn.device)
        return groups[drawn, step % groups.shape[1]]

    def batch_indices(self, epoch: int) -> Iterator[torch.Tensor]:
        order = epoch_order(self.n_draws, self.seed, epoch, self.shuffle)
        for step in range(self.steps_per_epoch):
            yield self.step_rows(order, step)

    @abstractmethod
    def batches(self, epoch: int) -> Iterator[Batch]: ...


class StagedSource(BatchSource):
    """The split staged once on the device; batches are sliced there.

    With ``target_rows``, ``targets`` holds each distinct stimulus' embedding once and trial i's target is
    ``targets[target_rows[i]]``: at NSD scale (24,980 trials of ~8,859 images, 257x768 bf16) that is 3.5 GB
    of device memory instead of 9.9 GB.
    """

    mode = "device"

    def __init__(
        self,
        voxels: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        target_rows: torch.Tensor | None = None,
        repeat_groups: torch.Tensor | None = None,
    ) -> None:
        super().__init__(int(voxels.shape[0]), batch_size, voxels.device, seed, shuffle, drop_last,
                         None if repeat_groups is None else repeat_groups.to(voxels.device))
        n_targets = int(target_rows.shape[0]) if target_rows is not None else int(targets.shape[0])
        if n_targets != self.n_samples:
            raise DataError(f"staged data: {self.n_samples} voxel rows but {n_targets} target rows")
        self.voxels = voxels
        self.targets = targets
        self.target_rows = target_rows

    def batches(self, epoch: int) -> Iterator[Batch]:
        # One small host->device copy of the permutation per epoch, then every batch is device-side.
        order = epoch_order(self.n_draws, self.seed, epoch, self.shuffle).to(self.device)
        for step in range(self.steps_per_epoch):
            rows = self.step_rows(order, step)
            target_rows = rows if self.target_rows is None else self.target_rows.index_select(0, rows)
            yield self.voxels.index_select(0, rows), self.targets.index_select(0, target_rows)


class StreamingSource(BatchSource):
    """Rows read from an array-like by a background thread, ``PREFETCH_BATCHES`` ahead of the trainer."""

    mode = "stream"

    def __init__(
        self,
        voxels: ArrayLike,
        targets: ArrayLike,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        target_dtype: torch.dtype = torch.float32,
        prefetch: int = PREFETCH_BATCHES,
        repeat_groups: torch.Tensor | None = None,
    ) -> None:
        super().__init__(int(voxels.shape[0]), batch_size, device, seed, shuffle, drop_last, repeat_groups)
        self.voxels = voxels
        self.targets = targets
        self.target_dtype = target_dtype
        self.prefetch = prefetch

    def _read(self, rows: torch.Tensor) -> Batch:
        index = rows.numpy()
        voxels = torch.from_numpy(read_rows(self.voxels, index))
        targets = torch.from_numpy(read_rows(self.targets, index))
        if self.device.type == "cuda":
            voxels, targets = voxels.pin_memory(), targets.pin_memory()
        return voxels, targets

    def batches(self, epoch: int) -> Iterator[Batch]:
        slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def offer(item: tuple[str, Any]) -> bool:
            while not stop.is_set():
                try:
                    slots.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for rows in self.batch_indices(epoch):
                    if not offer(("batch", self._read(rows))):
                        return
                offer(("done", None))
            except BaseException as error:  # handed to the trainer's thread, which re-raises it
                offer(("error", error))

        reader = threading.Thread(target=produce, name="brainbench-prefetch", daemon=True)
        reader.start()
        try:
            while True:
                kind, payload = slots.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise payload
                voxels, targets = payload
                yield (
                    voxels.to(self.device, non_blocking=True),
                    targets.to(self.device, dtype=self.target_dtype, non_blocking=True),
                )
        finally:
            stop.set()
            reader.join(timeout=5.0)


def stage_array(array: ArrayLike, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The whole array as one tensor on ``device``, copied in row blocks (no full second host copy)."""
    if isinstance(array, np.ndarray) and device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(dtype)
    staged = torch.empty(tuple(array.shape), dtype=dtype, device=device)
    for start in range(0, int(array.shape[0]), STAGE_BLOCK_ROWS):
        block = np.asarray(array[start : start + STAGE_BLOCK_ROWS], dtype=np.float32)
        staged[start : start + len(block)] = torch.from_numpy(block).to(device, dtype=dtype)
    return staged


def staging_bytes(voxels: ArrayLike, targets: ArrayLike, target_dtype: torch.dtype) -> int:
    """Device memory the staged split would take (voxels as fp32, targets as ``target_dtype``).

    A :class:`RowIndexed` target is staged as its distinct rows plus an int64 index.
    """
    n = int(voxels.shape[0])
    voxel_bytes = n * _row_nbytes(voxels, torch.float32)
    if isinstance(targets, RowIndexed):
        return voxel_bytes + len(targets.values) * _row_nbytes(targets.values, target_dtype) + 8 * n
    return voxel_bytes + n * _row_nbytes(targets, target_dtype)


def choose_mode(
    voxels: ArrayLike,
    targets: ArrayLike,
    device: torch.device,
    target_dtype: torch.dtype = torch.float32,
    budget_fraction: float = DEFAULT_BUDGET_FRACTION,
    mode: str | None = None,
) -> str:
    """"device" when the split fits the memory budget (or is forced), else "stream"."""
    mode = mode or os.environ.get(STAGING_ENV, "auto")
    if mode not in ("auto", "device", "stream"):
        raise BrainbenchError(f"{STAGING_ENV}={mode!r}: expected auto, device or stream")
    if mode != "auto":
        return mode
    budget = budget_fraction * free_memory_bytes(device)
    return "device" if staging_bytes(voxels, targets, target_dtype) <= budget else "stream"


def make_batch_source(
    voxels: ArrayLike,
    targets: ArrayLike,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
    target_dtype: torch.dtype = torch.float32,
    budget_fraction: float = DEFAULT_BUDGET_FRACTION,
    mode: str | None = None,
    repeat_groups: np.ndarray | None = None,
) -> BatchSource:
    """A staged source when the split fits ``budget_fraction`` of free device memory, else a stream.

    ``repeat_groups`` (n_images, R) switches to one repeat per step (see :class:`BatchSource`)."""
    groups = None if repeat_groups is None else torch.from_numpy(np.asarray(repeat_groups, dtype=np.int64))
    if int(voxels.shape[0]) != int(targets.shape[0]):
        raise DataError(
            f"training data: {voxels.shape[0]} voxel rows but {targets.shape[0]} target rows; "
            "expected one target per trial"
        )
    chosen = choose_mode(voxels, targets, device, target_dtype, budget_fraction, mode)
    if chosen == "device":
        if isinstance(targets, RowIndexed):  # distinct embeddings once, plus which one each trial uses
            staged_targets = stage_array(targets.values, device, target_dtype)
            target_rows = torch.from_numpy(targets.index).to(device)
        else:
            staged_targets, target_rows = stage_array(targets, device, target_dtype), None
        return StagedSource(
            stage_array(voxels, device),
            staged_targets,
            batch_size,
            seed,
            shuffle,
            drop_last,
            target_rows=target_rows,
            repeat_groups=groups,
        )
    return StreamingSource(voxels, targets, batch_size, device, seed, shuffle, drop_last, target_dtype,
                           repeat_groups=groups)
