"""Which device and numeric precision a run trains on, seeding, and how much memory it may use."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from brainbench.config import PRECISIONS  # declared with the run settings; imported from here too
from brainbench.errors import BrainbenchError


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> the current CUDA device if there is one, else the CPU; other names pass through."""
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BrainbenchError(f"device {name!r} was asked for but CUDA is not available")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32.

    "auto" is bf16 on GPUs that support it and fp32 everywhere else (CPU bf16 is slow and lossy).
    """
    if precision not in PRECISIONS:
        raise BrainbenchError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision in ("bf16", "bf16-master"):
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def uses_master_weights(precision: str) -> bool:
    """Whether the model's weights are kept in bf16, with fp32 masters in the optimizer."""
    return precision == "bf16-master"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) so a CPU run is repeatable bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def free_memory_bytes(device: torch.device) -> int:
    """Memory free now on ``device``: GPU memory for CUDA, available RAM for the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest machine
        return 4 * 2**30


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
