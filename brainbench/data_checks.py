"""A cell's data checked before any MLflow run exists: every split's trial list read, a sample of rows inspected.

Readers check what they can cheaply when they open a file (shapes, dtypes, the trial table); this adds what only
the values show, on a sample of rows spread over each split (at most ``SAMPLE_ROWS`` per split, read through the
same lazy views training reads): NaN or infinite values, values so large that float32 arithmetic overflows
(betas of +-3e38 ran to FINISHED at chance level before), and rows that are all the same (all-zero betas).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brainbench.errors import BrainbenchError, DataError

#: Rows read per split: enough to see a file of zeros or of garbage, cheap on any file (one HDF5 read each).
SAMPLE_ROWS = 64
#: Largest |value| accepted: squares summed over 10^5 voxels or trials stay inside float32 (3.4e38). Real betas
#: (z-scored, or percent signal change) are below 10^4.
MAX_ABS = 1e15
SPLITS = ("train", "test")


def where_rows(trials: Any, rows: np.ndarray) -> tuple[str, np.ndarray]:
    """The file (and dataset key) the trials' voxels come from, and the rows' numbers in that file, when the
    view says (brainbench_nsd's RowView does); else the dataset's own words and the rows of the split."""
    view = trials.voxels
    file, key = getattr(view, "file", None), getattr(view, "key", None)
    source_rows = getattr(view, "rows", None)
    if file is None:
        return "", rows
    named = f"{file}: dataset {key!r}" if key else str(file)
    return named, (np.asarray(source_rows)[rows] if source_rows is not None else rows)


def check_sample(trials: Any, what: str) -> None:
    """NaN/inf, overflow-sized values and identical rows in a sample of ``trials`` (``what`` names them)."""
    n = int(trials.n_trials)
    rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).round().astype(np.int64))
    from brainbench.rows import read_rows

    # one row per read (block_rows=1): spread rows of a lazy HDF5 view cost a row each, not the span between them
    block = np.asarray(read_rows(trials.voxels, rows, block_rows=1), dtype=np.float64).reshape(len(rows), -1)
    named, source_rows = where_rows(trials, rows)
    prefix = f"{named} ({what})" if named else what
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        first = int(source_rows[np.flatnonzero(~finite)[0]])
        raise DataError(f"{prefix}: NaN or infinite values in row {first} (of {len(rows)} rows sampled, "
                        f"{int((~finite).sum())} bad); betas must be finite")
    largest = np.abs(block).max(axis=1)
    if (largest > MAX_ABS).any():
        index = int(np.flatnonzero(largest > MAX_ABS)[0])
        raise DataError(
            f"{prefix}: row {int(source_rows[index])} holds {float(block[index][np.abs(block[index]).argmax()]):.3g}; "
            f"values past +-{MAX_ABS:.0e} overflow float32 arithmetic (real betas are z-scores or percent signal "
            "change, far smaller): the file is corrupt or not betas"
        )
    if len(rows) > 1 and np.ptp(block, axis=0).max() == 0:
        value = float(block[0, 0]) if block.size else 0.0
        kind = "all zero" if value == 0 else f"all {value:g}"
        raise DataError(
            f"{prefix}: the {len(rows)} rows sampled (rows {int(source_rows[0])}..{int(source_rows[-1])}) are "
            f"identical ({kind}): no signal to decode; is this the right file?"
        )


def check_cell_data(dataset: Any, dataset_name: str, subject: int) -> int:
    """Read ``subject``'s trial lists and a sample of rows of each split; returns the subject's voxel count.

    Any failure to read is a DataError naming the dataset, the subject and the split (a reader's own
    DataError, which names its file and key, passes through unchanged).
    """
    splits = [split for split in SPLITS if split in dataset.splits()]
    n_voxels = None
    for split in splits:
        what = f"subject {subject}, split {split}"
        try:
            trials = dataset.trials(subject, split)
            if trials.n_trials == 0:
                raise DataError(f"dataset {dataset_name!r}, {what}: no trials; a run needs trials in both "
                                f"{' and '.join(splits)}")
            shape = tuple(trials.voxels.shape)
            if len(shape) != 2:
                raise DataError(f"dataset {dataset_name!r}, {what}: voxels of shape {shape}; "
                                "expected (n_trials, n_voxels)")
            if trials.n_voxels == 0:
                raise DataError(f"dataset {dataset_name!r}, {what}: 0 voxels per trial; expected (n_trials, "
                                "n_voxels) with n_voxels > 0")
            if n_voxels is not None and trials.n_voxels != n_voxels:
                raise DataError(f"dataset {dataset_name!r}, subject {subject}: {n_voxels} voxels in one split, "
                                f"{trials.n_voxels} in {split}")
            n_voxels = trials.n_voxels
            check_sample(trials, what)
        except BrainbenchError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OSError, RuntimeError) as exc:
            # a reader that failed without saying why: say where, and what it raised
            raise DataError(f"dataset {dataset_name!r}, {what}: could not be read ({type(exc).__name__}: {exc})") \
                from None
    return int(n_voxels) if n_voxels is not None else int(dataset.n_voxels(subject))
