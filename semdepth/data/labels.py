"""Cityscapes label lookup tables, built from `cityscapesscripts.helpers.labels`.

The table is never hand-written: a copy could drift from the evaluation scripts everyone else uses
(ids, train ids and colours must match Cityscapes exactly so that real data and SynthCity agree).

- `LABEL_TO_TRAIN`: 256-entry uint8 LUT, label id -> train id (0..18), 255 for ignored/unknown ids,
  so `LABEL_TO_TRAIN[label_ids]` maps a whole uint8 label image in one indexing step.
- `TRAIN_COLORS`: 256x3 uint8 RGB, train id -> colour (255 and unused ids -> black).
- `LABEL_COLORS`: 256x3 uint8 RGB, label id -> colour (for `_gtFine_color.png`).
- `TRAIN_NAMES`: the 19 class names in train-id order; `LABEL_IDS`: name -> label id.
- `FOREGROUND_TRAIN_IDS`: the SEEM foreground set, looked up by name.
"""
from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

NUM_CLASSES = 19
IGNORE = 255

#: Class names that count as foreground in the binary map (SEEM's set; docs/method.md §2).
FOREGROUND_NAMES = ("traffic light", "traffic sign", "person", "rider", "car", "truck", "bus", "train",
                    "motorcycle", "bicycle")


def _build() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], dict[str, int], dict[str, int]]:
    label_to_train = np.full(256, IGNORE, dtype=np.uint8)
    train_colors = np.zeros((256, 3), dtype=np.uint8)
    label_colors = np.zeros((256, 3), dtype=np.uint8)
    train_names: list[str | None] = [None] * NUM_CLASSES
    label_ids: dict[str, int] = {}
    train_ids: dict[str, int] = {}
    for lab in _CS_LABELS:
        if not 0 <= lab.id < 256:  # 'license plate' has id -1: not a pixel value in labelIds PNGs
            continue
        label_ids[lab.name] = lab.id
        label_colors[lab.id] = lab.color
        if 0 <= lab.trainId < NUM_CLASSES:
            label_to_train[lab.id] = lab.trainId
            train_colors[lab.trainId] = lab.color
            train_names[lab.trainId] = lab.name
            train_ids[lab.name] = lab.trainId
    if any(n is None for n in train_names):  # pragma: no cover - guards a future cityscapesscripts change
        raise RuntimeError("cityscapesscripts labels do not cover train ids 0..18")
    for arr in (label_to_train, train_colors, label_colors):
        arr.setflags(write=False)
    return label_to_train, train_colors, label_colors, tuple(train_names), label_ids, train_ids  # type: ignore[return-value]


LABEL_TO_TRAIN, TRAIN_COLORS, LABEL_COLORS, TRAIN_NAMES, LABEL_IDS, TRAIN_IDS = _build()
FOREGROUND_TRAIN_IDS: tuple[int, ...] = tuple(sorted(TRAIN_IDS[n] for n in FOREGROUND_NAMES))

#: 256-entry uint8 LUT: 1 for foreground train ids, 0 otherwise (255/ignore -> 0).
FOREGROUND_LUT = np.zeros(256, dtype=np.uint8)
FOREGROUND_LUT[list(FOREGROUND_TRAIN_IDS)] = 1
FOREGROUND_LUT.setflags(write=False)


def label_to_train(label_ids: np.ndarray) -> np.ndarray:
    """Map a uint8 label-id image to train ids (uint8, 255 = ignore)."""
    return LABEL_TO_TRAIN[np.asarray(label_ids, dtype=np.uint8)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """HxW train ids (any int dtype, 255 = ignore) -> HxWx3 uint8 RGB with the Cityscapes colours."""
    ids = np.asarray(train_ids)
    if ids.dtype != np.uint8:
        ids = np.where((ids >= 0) & (ids < 256), ids, IGNORE).astype(np.uint8)
    return TRAIN_COLORS[ids]
