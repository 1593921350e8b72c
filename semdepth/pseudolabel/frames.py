"""Frames for the pseudo-label network at a resolution other than the working one.

`pseudolabel.height` x `width` (when not 0 x 0) trains and infers on the raw frames of `data.raw_dir`
resized to that size, because the prepared root holds the working resolution only and upsampling it
would add no detail. The maps are brought back to the working resolution (labels nearest, confidence
area, `resize_maps`), so they stay pixel-aligned with the prepared frames and their GT.

Raw paths come from the manifest's (split, city, id, annotated) through `CityscapesRoot`, the same
mapping downsample used; images are area-resized and label ids nearest-resized with downsample's own
functions (`semdepth.data.cityscapes`), so the raw read at the working size would reproduce the
prepared frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from semdepth import SemdepthError
from semdepth.data.cityscapes import CityscapesRoot, read_gray, read_image, resize_area, resize_nearest
from semdepth.data.frames import read_label
from semdepth.data.labels import IGNORE, LABEL_TO_TRAIN

RESOLUTION_KEY = "pseudolabel.height/width"


def network_size(cfg_hw: tuple[int, int], working_hw: tuple[int, int]) -> tuple[int, int]:
    """The size the network sees: `pseudolabel.height x width`, or the working one for 0 x 0."""
    return tuple(working_hw) if cfg_hw == (0, 0) else tuple(cfg_hw)  # type: ignore[return-value]


class RawFrames:
    """Reads manifest frames from the raw root at `hw` (RGB float [3,H,W], train ids int64 [H,W])."""

    def __init__(self, raw_dir: str | Path, hw: tuple[int, int]) -> None:
        self.root = CityscapesRoot(raw_dir)
        self.hw = (int(hw[0]), int(hw[1]))

    def images(self, df: pd.DataFrame) -> list[Path]:
        return [self.root.image(sp, c, i, bool(a))
                for sp, c, i, a in zip(df["split"], df["city"], df["id"], df["annotated"])]

    def labels(self, df: pd.DataFrame) -> list[Path | None]:
        """Raw label-id files of the rows that have a prepared label (None elsewhere)."""
        return [self.root.label(sp, c, i) if isinstance(lab, str) else None
                for sp, c, i, lab in zip(df["split"], df["city"], df["id"], df["label"])]

    def _fits(self, shape: tuple[int, ...], path: Path) -> None:
        h, w = shape[:2]
        if self.hw[0] > h or self.hw[1] > w:
            raise SemdepthError(f"{RESOLUTION_KEY}: {self.hw[0]}x{self.hw[1]} is larger than the raw frame "
                                f"{path} ({h}x{w}); at most the raw resolution")

    def image_u8(self, path: Path) -> np.ndarray:
        img = read_image(Path(path))
        self._fits(img.shape, path)
        return cv2.cvtColor(resize_area(img, self.hw), cv2.COLOR_BGR2RGB)

    def image(self, path: Path) -> torch.Tensor:
        return torch.from_numpy(self.image_u8(path)).permute(2, 0, 1).float().div_(255.0)

    def label_u8(self, path: Path) -> np.ndarray:
        ids = read_gray(Path(path), np.uint8, "label-id")
        self._fits(ids.shape, path)
        return LABEL_TO_TRAIN[resize_nearest(ids, self.hw)]

    def label(self, path: Path) -> torch.Tensor:
        return torch.from_numpy(self.label_u8(path).astype(np.int64))

    def pair(self, image: Path, label: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """What `SourceTrainSet` reads per sample."""
        return self.image(image), self.label(label)

    def check(self, sample: pd.DataFrame, working_hw: tuple[int, int]) -> None:
        """One-line errors before any work: a missing raw root, a size below the working one or above
        the raw frames' (that of `sample`'s first row)."""
        if not self.root.root.is_dir():
            raise SemdepthError(f"{RESOLUTION_KEY}: {self.hw[0]}x{self.hw[1]} reads the raw frames, but "
                                f"data.raw_dir {self.root.root} does not exist")
        if self.hw[0] < working_hw[0] or self.hw[1] < working_hw[1]:
            raise SemdepthError(f"{RESOLUTION_KEY}: {self.hw[0]}x{self.hw[1]} is below the working resolution "
                                f"{working_hw[0]}x{working_hw[1]} (data.height/width); 0 x 0 means the working one")
        path = self.images(sample)[0]
        self._fits(read_image(path).shape, path)


class RawInferenceSet(Dataset):
    """Raw frames at the network size, each with its prepared (working-resolution) label for scoring."""

    def __init__(self, frames: RawFrames, images: Sequence[Path], labels: Sequence[Path | None],
                 working_hw: tuple[int, int]) -> None:
        self.frames, self.images, self.labels = frames, list(images), list(labels)
        self.working_hw = tuple(working_hw)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        lp = self.labels[i]
        lab = read_label(lp) if lp is not None else torch.full(self.working_hw, IGNORE, dtype=torch.long)
        return {"index": i, "image": self.frames.image(self.images[i]), "label": lab}


def resize_maps(conf: torch.Tensor, arg: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B,h,w] max-softmax (float) and class ids -> size `hw`: confidence by area averaging, ids by
    nearest (downsample's convention for labels, so pseudo-labels and GT sample the same pixels)."""
    c = conf.float().cpu().numpy()
    a = arg.to(torch.uint8).cpu().numpy()
    conf_out = np.stack([resize_area(x, hw) for x in c])
    arg_out = np.stack([resize_nearest(x, hw) for x in a])
    return torch.from_numpy(conf_out), torch.from_numpy(arg_out).long()
