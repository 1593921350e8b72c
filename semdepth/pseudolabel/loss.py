"""Training losses of the pseudo-label network (`pseudolabel.loss`).

- `ce`: pixel-wise cross entropy, 255 ignored (the default).
- `balanced`: cross entropy weighted per class by ENet's w_c = 1 / ln(1.02 + p_c), p_c the share of
  class c among the labelled source pixels. Why ENet's weights rather than median-frequency ones: they
  are bounded (about 1.4 for a class covering 70% of the pixels, at most ~50 for a vanishing one), so a
  few hundred steps do not trade road and sky for poles; classes absent from the source get weight 0
  (they are never a target there).
- `ohem`: online hard example mining: the mean cross entropy over the `ohem_keep` share of labelled
  pixels with the highest loss in the batch (at least one pixel). Easy road and sky pixels then stop
  dominating the gradient.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from semdepth.data.labels import IGNORE, NUM_CLASSES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ENET_C = 1.02


def label_histogram(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel count per train id (0..18) over label maps (255 and other ids ignored)."""
    hist = np.zeros(NUM_CLASSES, np.int64)
    for lab in labels:
        lab = np.asarray(lab).ravel()
        hist += np.bincount(lab[lab < NUM_CLASSES].astype(np.int64), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return hist


def enet_weights(hist: np.ndarray) -> torch.Tensor:
    """w_c = 1 / ln(1.02 + p_c) for classes present, 0 for absent ones (float32 [19])."""
    hist = np.asarray(hist, np.float64)
    total = hist.sum()
    if total <= 0:
        return torch.ones(len(hist))
    p = hist / total
    w = np.where(hist > 0, 1.0 / np.log(ENET_C + p), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, keep: float) -> torch.Tensor:
    """Mean cross entropy of the ceil(keep * n) hardest of the n labelled pixels."""
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").flatten()
    valid = per_pixel[target.flatten() != IGNORE]
    if valid.numel() == 0:
        return per_pixel.sum() * 0.0  # keeps the graph; nothing labelled in this batch
    k = max(1, math.ceil(keep * valid.numel()))
    return valid.topk(k, sorted=False).values.mean()


def make_loss(kind: str, *, ohem_keep: float = 0.25, weights: torch.Tensor | None = None) -> LossFn:
    """The loss `kind` as logits [B,C,H,W], target [B,H,W] -> scalar; `balanced` needs `weights`."""
    if kind == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, ignore_index=IGNORE)
    if kind == "balanced":
        if weights is None:
            raise ValueError("balanced loss needs class weights")
        return lambda logits, y: F.cross_entropy(logits, y, weight=weights.to(logits.device), ignore_index=IGNORE)
    if kind == "ohem":
        return lambda logits, y: ohem_cross_entropy(logits, y, ohem_keep)
    raise ValueError(f"unknown loss {kind!r}")


def source_weights(labels: Sequence[Path], read: Callable[[Path], np.ndarray]) -> torch.Tensor:
    """ENet weights from the source labels as `read` returns them (at the training resolution)."""
    return enet_weights(label_histogram([read(p) for p in labels]))
