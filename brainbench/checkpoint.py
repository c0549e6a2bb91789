"""Checkpoints and model files that load safely: tensors and plain containers only, never pickled code.

- Training checkpoints (``last.pt``) are ``torch.save`` files readable with ``torch.load(weights_only=True)``;
  RNG states are stored as tensors so a resumed run draws the same random numbers.
- Final model files are safetensors with the metadata in the header (and a JSON sidecar for people).
- Both are written atomically: a temporary file in the same folder, then ``os.replace``; a full disk is one
  clear error (DiskFullError: the folder and its free space), and a kill mid-write leaves a temporary file
  that the next start of the cell removes (brainbench/workdirs.py).
- Loading checks the voxel count and target shape and names both sides when they differ.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainbench.errors import BrainbenchError, CheckpointCorruptError, CheckpointMismatchError, DataError
from brainbench.interfaces import Shape

CHECKPOINT_NAME = "last.pt"
MODEL_NAME = "model.safetensors"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------ metadata


def model_metadata(encoder_name: str, encoder_params: dict[str, Any], n_voxels: int, target_shape: Shape) -> dict:
    """What a checkpoint must say about the model it holds (plain types only)."""
    return {
        "format": FORMAT_VERSION,
        "encoder": encoder_name,
        # JSON so that any option value (paths, tuples) survives a weights_only load as one string
        "encoder_params": json.dumps(encoder_params, sort_keys=True, default=str),
        "n_voxels": int(n_voxels),
        "target_shape": [int(s) for s in target_shape],
    }


def check_compatible(
    metadata: dict[str, Any], source: Path, n_voxels: int | None, target_shape: Shape | None
) -> None:
    """Refuse a checkpoint made for another voxel count or target shape, naming both."""
    saved_voxels = int(metadata["n_voxels"])
    saved_shape = tuple(int(s) for s in metadata["target_shape"])
    if n_voxels is not None and saved_voxels != int(n_voxels):
        raise CheckpointMismatchError(
            f"checkpoint {source} was trained on {saved_voxels} voxels but the data has {n_voxels} voxels"
        )
    if target_shape is not None and saved_shape != tuple(target_shape):
        raise CheckpointMismatchError(
            f"checkpoint {source} predicts targets of shape {_shape_text(saved_shape)} "
            f"but the target has shape {_shape_text(tuple(target_shape))}"
        )


def _shape_text(shape: Shape) -> str:
    return "x".join(map(str, shape))


# --------------------------------------------------------------------------------------- RNG states


def capture_rng_states() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA generator states, as tensors."""
    _name, keys, position, has_gauss, cached_gauss = np.random.get_state(legacy=True)
    version, python_state, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_position": torch.tensor([position, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(cached_gauss, dtype=torch.float64),
        "python_version": torch.tensor(version, dtype=torch.int64),
        "python_state": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor(
            [gauss_next is not None, gauss_next or 0.0], dtype=torch.float64
        ),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    position, has_gauss = (int(v) for v in states["numpy_position"])
    keys = states["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, position, has_gauss, float(states["numpy_gauss"])))
    has_next, next_value = states["python_gauss"].tolist()
    python_state = tuple(int(v) for v in states["python_state"].tolist())
    random.setstate((int(states["python_version"]), python_state, next_value if has_next else None))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(states["cuda"]))


# ------------------------------------------------------------------------------- training checkpoints


def _temporary_sibling(path: Path) -> Path:
    # the name brainbench.locks.remove_temporaries knows: a kill mid-write leaves it for the next start to remove
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class DiskFullError(BrainbenchError):
    """A checkpoint or model file could not be written: no space left (or over quota) on its disk."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: torch reports a short write of its zip container as a RuntimeError ("unexpected pos ..."), not as the
#: OSError beneath it; with less than this free on the disk, that is taken for a full disk.
LOW_SPACE_BYTES = 16 * 2**20


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def _disk_full(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def _written_whole(path: Path, what: str) -> Iterator[Path]:
    """A temporary file next to ``path`` for the block to write, renamed to ``path`` when it is whole; a full
    disk ends in one DiskFullError naming the folder and its free space instead of torch's and the OS's
    errors, and no half file is left either way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        written = temporary.stat().st_size if temporary.exists() else 0
        try:
            free = shutil.disk_usage(path.parent).free  # as the write met it, before the part is removed
        except OSError:
            free = None
        torch_short_write = isinstance(error, RuntimeError) and free is not None and free < LOW_SPACE_BYTES
        if not (_disk_full(error) or torch_short_write):
            raise
        kept = f"the last complete {what} ({path.name}) is kept" if path.exists() else f"no earlier {what} exists"
        raise DiskFullError(
            f"no space left on the disk of {path.parent} writing the {what} {path.name}: "
            f"{_mib(free) if free is not None else 'unknown'} free there after {_mib(written)} of it was written; "
            f"{kept}. Free some space there (or set BRAINBENCH_HOME to a larger disk), then rerun with --resume"
        ) from None
    finally:
        temporary.unlink(missing_ok=True)


def atomic_torch_save(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename over it (never a half file)."""
    with _written_whole(path, "checkpoint") as temporary, open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _read_safely(path: Path, read: Callable[[], Any], what: str) -> Any:
    """``read()``, with a damaged file named and the way out given instead of torch's own advice: a file
    that needs ``weights_only=False`` to load is not a brainbench checkpoint, and must never be loaded so."""
    try:
        return read()
    except Exception as error:  # torch, pickle and safetensors each raise their own kinds for a bad file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error):  # torch's advice to unpickle anyway is exactly what must not happen
            reason = "it holds Python objects or is not a torch file, and brainbench never unpickles code"
        raise CheckpointCorruptError(
            f"{what} {path} is damaged or not a brainbench file ({type(error).__name__}: {reason[:160]}); "
            "start the cell again with --restart (or delete the file); the interrupted epochs in it are lost"
        ) from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    return load_file(str(path)), {key: json.loads(value) for key, value in header.items()}


def load_checkpoint(
    path: Path, n_voxels: int | None = None, target_shape: Shape | None = None
) -> dict[str, Any]:
    """A training checkpoint, loaded without unpickling code and checked against the data's shapes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    payload = _read_safely(path, lambda: torch.load(path, map_location="cpu", weights_only=True), "checkpoint")
    if not isinstance(payload, dict) or "metadata" not in payload:
        raise DataError(f"checkpoint {path}: no 'metadata' entry; expected a brainbench training checkpoint")
    check_compatible(payload["metadata"], path, n_voxels, target_shape)
    return payload


# ------------------------------------------------------------------------------------- model files


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no two sharing memory (safetensors refuses shared storage)."""
    seen: set[tuple[int, int]] = set()
    result = {}
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        seen.add((tensor.untyped_storage().data_ptr(), tensor.storage_offset()))
        result[name] = tensor
    return result


def save_model_file(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Weights as safetensors (metadata JSON-encoded in the header) plus ``<file>.json`` for people.

    Falls back to a weights_only torch file when safetensors is not installed.
    """
    path = Path(path)
    tensors = _unshared(state)
    with _written_whole(path, "model file") as temporary:
        try:
            from safetensors.torch import save_file
        except ImportError:
            torch.save({"metadata": metadata, "state": tensors}, temporary)
        else:
            header = {key: json.dumps(value) for key, value in metadata.items()}
            save_file(tensors, str(temporary), metadata=header)
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return path


def load_model_file(
    path: Path, n_voxels: int | None = None, target_shape: Shape | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a file written by :func:`save_model_file`, checked against the shapes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} does not exist")
    with open(path, "rb") as handle:
        is_zip = handle.read(2) == b"PK"  # torch.save files are zip archives; safetensors start with a length
    if is_zip:
        payload = _read_safely(path, lambda: torch.load(path, map_location="cpu", weights_only=True), "model file")
        state, metadata = payload["state"], payload["metadata"]
    else:
        state, metadata = _read_safely(path, lambda: _read_safetensors(path), "model file")
    if "n_voxels" not in metadata or "target_shape" not in metadata:
        raise DataError(f"model file {path}: metadata lacks 'n_voxels'/'target_shape'; not a brainbench model")
    check_compatible(metadata, path, n_voxels, target_shape)
    return state, metadata
