"""What a run will need, estimated before it starts, against what the machine has: a model's training memory and
a file's bytes on disk. A size typo (``--opt widths=1000000000,64,32``: 1.8 TB) is refused with the numbers
before anything is allocated or written, not discovered by the allocator or a full disk.

Nothing here imports torch unless a torch encoder is sized (on torch's "meta" device: no memory).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from brainbench.errors import BrainbenchError

#: Training holds each parameter about four times in fp32: weights, gradients and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16
#: Disk one item of a simulated LAION-style gallery takes, at least: its float16 768-d embedding, its metadata
#: row and its index entry (brainbench_laion writes them).
GALLERY_BYTES_PER_ITEM = 768 * 2 + 128


class ResourceError(BrainbenchError):
    """A run that cannot fit in this machine's memory or disk, refused before it starts."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover (the loop returns)


def memory_bytes() -> tuple[int, int]:
    """(total, available) RAM in bytes: /proc/meminfo where there is one, else sysconf."""
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", fields["MemTotal"]))
    except (OSError, KeyError, ValueError, IndexError):
        try:
            page = int(os.sysconf("SC_PAGE_SIZE"))
            return int(os.sysconf("SC_PHYS_PAGES")) * page, int(os.sysconf("SC_AVPHYS_PAGES")) * page
        except (ValueError, OSError, AttributeError):
            return 2**63, 2**63  # unknown: refuse nothing


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (its nearest existing parent)."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return int(shutil.disk_usage(path).free)
    except OSError:
        return 2**63


def check_disk(path: Path, needed: int, what: str, setting: str = "") -> None:
    """Refuse to write ``needed`` bytes under ``path`` when its file system has less free space."""
    free = free_disk_bytes(path)
    if needed > free:
        raise ResourceError(
            f"{what} would write about {human_bytes(needed)} under {path}, but only {human_bytes(free)} is free there"
            + (f"; lower {setting}" if setting else "")
        )


def check_memory(needed: int, what: str, setting: str = "") -> None:
    """Refuse to hold ``needed`` bytes in RAM when the machine has less in total."""
    total, available = memory_bytes()
    if needed > total:
        raise ResourceError(
            f"{what} needs about {human_bytes(needed)} of memory, but this machine has {human_bytes(total)} in all "
            f"({human_bytes(available)} available)" + (f"; lower {setting}" if setting else "")
        )


def parameter_count(encoder: Any, n_voxels: int, target_shape: tuple[int, ...]) -> int | None:
    """Parameters of a torch encoder's module built on the meta device (nothing allocated); None when the
    encoder is not a torch one or cannot be built there."""
    from brainbench.torch_encoder import TorchEncoder

    if not isinstance(encoder, TorchEncoder):
        return None
    import torch

    name = getattr(encoder, "name", type(encoder).__name__)
    try:
        with torch.device("meta"):
            module = encoder.build(int(n_voxels), tuple(target_shape))
    except ValueError as exc:  # the encoder refusing this configuration (e.g. no whole patch in the voxels)
        raise BrainbenchError(
            f"{name} cannot be built for {n_voxels} voxels and target shape {tuple(target_shape)}: {exc}"
        ) from None
    except RuntimeError as exc:
        if "overflow" in str(exc).lower():  # one tensor past 2**63 bytes: not even countable
            raise ResourceError(f"{name} with these options is too large to build: {exc}") from None
        return None  # init code that needs real numbers: no estimate, the trainer's own checks stand
    except Exception:
        return None
    seen: set[int] = set()
    total = 0
    for param in module.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def device_memory(device: str) -> tuple[int, str]:
    """(total bytes, words) of the memory a model trained on ``device`` lives in."""
    if device != "cpu":
        import torch

        if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
            index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else torch.cuda.current_device()
            total = int(torch.cuda.get_device_properties(index).total_memory)
            return total, f"GPU {index} has {human_bytes(total)}"
    total, available = memory_bytes()
    return total, f"this machine has {human_bytes(total)} of RAM ({human_bytes(available)} available)"


def check_model_fits(encoder: Any, n_voxels: int, target_shape: tuple[int, ...], device: str, given: str = "") -> None:
    """Refuse a torch encoder whose training state (weights, gradients, optimizer moments) cannot fit in the
    memory of the device it would train on, naming its parameter count and the bytes on each side."""
    count = parameter_count(encoder, n_voxels, target_shape)
    if count is None:
        return
    needed = count * TRAINING_BYTES_PER_PARAMETER
    total, words = device_memory(device)
    if needed > total:
        raise ResourceError(
            f"{getattr(encoder, 'name', 'the encoder')} with these options has {count:,} parameters at {n_voxels} "
            f"voxels: training holds about {human_bytes(needed)} ({TRAINING_BYTES_PER_PARAMETER} bytes per "
            f"parameter: weights, gradients, Adam's moments), but {words}"
            + (f"; lower {given}" if given else "")
        )
