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
        raise SemdepthError(f"{path}: cannot read image (not an image file or corrupt)")
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
    """Prepared frames by index: `{"index", "image": [3,H,W]}`, plus

    - `"label": [H,W]` int64 when labels are given. A missing label for one frame becomes
      all-ignore, so batches of mixed frames still stack; a label whose size differs from its image
      is an error naming the label file and `label_producer`, the stage to rerun.
    - `"K": [3,3]` float32 when `intrinsics` [N,3,3] are given. Intrinsics hold only at the size
      they were scaled to, so then `sizes` (the manifest's (height, width) per frame) is required
      and an image of another size is an error naming it.
    """

    def __init__(self, images: Sequence[str | Path], labels: Sequence[str | Path | None] | None = None, *,
                 intrinsics: np.ndarray | None = None, sizes: Sequence[tuple[int, int]] | None = None,
                 label_producer: str = "downsample") -> None:
        self.images = [Path(p) for p in images]
        if labels is not None and len(labels) != len(self.images):
            raise ValueError("images and labels must have the same length")
        if intrinsics is not None and (sizes is None or len(sizes) != len(self.images)
                                       or len(intrinsics) != len(self.images)):
            raise ValueError("intrinsics need one matrix and one size per image")
        self.labels = None if labels is None else [None if p is None else Path(p) for p in labels]
        self.K = None if intrinsics is None else np.asarray(intrinsics, dtype=np.float32)
        self.sizes = None if sizes is None else [(int(h), int(w)) for h, w in sizes]
        self.label_producer = label_producer

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        img = read_rgb(self.images[i])
        if self.sizes is not None and tuple(img.shape[1:]) != self.sizes[i]:
            raise SemdepthError(f"{self.images[i]}: image is {tuple(img.shape[1:])}, the manifest says "
                                f"{self.sizes[i]}; rerun downsample")
        item = {"index": i, "image": img}
        if self.labels is not None:
            lp = self.labels[i]
            lab = read_label(lp) if lp is not None else torch.full(img.shape[1:], 255, dtype=torch.long)
            if lab.shape != img.shape[1:]:
                raise SemdepthError(f"{lp}: label size {tuple(lab.shape)} differs from the image "
                                    f"{tuple(img.shape[1:])}; rerun {self.label_producer}")
            item["label"] = lab
        if self.K is not None:
            item["K"] = torch.from_numpy(self.K[i])
        return item
