"""Process-level plumbing: seeding, determinism, device choice, threads, logging.

Same params and seed on CPU must give the same bytes so that DVC's run cache and `dvc exp` diffs
mean something; every stage calls `setup()` before touching torch.
"""
from __future__ import annotations

import logging
import os
import random
from typing import TYPE_CHECKING

import numpy as np

from semdepth import SemdepthError

if TYPE_CHECKING:
    import torch

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str = "semdepth") -> logging.Logger:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=os.environ.get("SEMDEPTH_LOG", "INFO"), format=_LOG_FORMAT, datefmt="%H:%M:%S")
    return logging.getLogger(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.manual_seed(seed)


def set_deterministic(threads: int = 0) -> None:
    """Deterministic kernels where torch has them (CPU is deterministic for what we use)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pick_device(device: str) -> torch.device:
    """`auto` = CUDA if present, else CPU; asking for CUDA without one is an error, not a fallback."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SemdepthError("compute.device: cuda was requested but torch sees no CUDA device")
    return torch.device(device)


def setup(seed: int, compute) -> torch.device:
    """Seed, make deterministic, set threads and return the device for a stage."""
    set_deterministic(compute.threads)
    seed_everything(seed)
    return pick_device(compute.device)


def cpu_workers(requested: int) -> int:
    """0 means all cores (as the params document)."""
    return requested if requested > 0 else max(1, os.cpu_count() or 1)
