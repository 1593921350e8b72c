"""Reading and writing prepared frames (RGB PNGs, train-id label PNGs) as tensors.

Every stage after `downsample` reads the same files; one reader keeps the conventions in one place
(docs/contracts.md): images float32 RGB in [0, 1] shaped [3,H,W], labels int64 train ids [H,W] with
255 = ignore. OpenCV is used because it is several times faster than PIL on small PNGs; it decodes BGR,
which is converted here and nowhere else. Unreadable files raise a one-line SemdepthError naming them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from semdepth import SemdepthError

cv2.setNumThreads(0)  # DataLoader workers parallelise; OpenCV's own pool would oversubscribe the cores


def read_rgb_u8(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SemdepthError(f"{path}: cannot read image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path) -> torch.Tensor:
    """float32 [3,H,W] in [0, 1]."""
    return torch.from_numpy(read_rgb_u8(path)).permute(2, 0, 1).float().div_(255.0)


def read_label_u8(path: str | Path) -> np.ndarray:
    """HxW uint8 train ids (255 = ignore) from a single-channel PNG."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise SemdepthError(f"{path}: cannot read label image")
    if lab.ndim != 2:
        raise SemdepthError(f"{path}: label image must have one channel, got shape {lab.shape}")
    return lab.astype(np.uint8, copy=False)


def read_label(path: str | Path) -> torch.Tensor:
    """int64 [H,W] train ids (255 = ignore)."""
    return torch.from_numpy(read_label_u8(path).astype(np.int64))


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 HxW (grey) or HxWx3 (RGB) array as PNG; fails loudly instead of returning False."""
    arr = np.ascontiguousarray(array)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), arr):
        raise SemdepthError(f"{path}: cannot write PNG")


class FrameDataset(Dataset):
    """Prepared frames by index: `{"index", "image": [3,H,W]}` plus `"label": [H,W]` when labels are
    given (a missing label for one frame becomes all-ignore, so batches of mixed frames still stack)."""

    def __init__(self, images: Sequence[str | Path], labels: Sequence[str | Path | None] | None = None) -> None:
        self.images = [Path(p) for p in images]
        if labels is not None and len(labels) != len(self.images):
            raise ValueError("images and labels must have the same length")
        self.labels = None if labels is None else [None if p is None else Path(p) for p in labels]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        img = read_rgb(self.images[i])
        item = {"index": i, "image": img}
        if self.labels is not None:
            lp = self.labels[i]
            item["label"] = (read_label(lp) if lp is not None
                             else torch.full(img.shape[1:], 255, dtype=torch.long))
        return item
