"""Segmentation scores from a confusion matrix: per-class IoU, mIoU, pixel accuracy.

Why one accumulator for everything: mIoU must be computed from the confusion matrix summed over the
whole set (Cityscapes' protocol), never as a mean of per-image mIoUs, and the same matrix gives the
per-class table, pixel accuracy and the DVC confusion plot. The conventions follow
`cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling` so that our numbers equal the official
evaluator's on the same predictions:

- rows = ground truth, columns = prediction; pixels whose GT is `ignore_index` are not counted at all
  (Cityscapes counts them in an 'ignored' row that its IoU never reads, which is the same thing);
- IoU_c = TP / (TP + FP + FN); a class absent from both GT and prediction has IoU NaN;
- mIoU = mean over the non-NaN IoUs (`getScoreAverage`), i.e. over classes present in the GT *or*
  predicted somewhere. `over="gt"` averages only over classes present in the GT instead.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch


class ConfusionMatrix:
    """Accumulates a `num_classes x num_classes` int64 matrix over batches (rows GT, columns pred)."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> None:
        """Add predictions and GT of the same shape (any number of images). GT pixels equal to
        `ignore_index` are skipped; any other out-of-range value is a bug upstream and raises."""
        p = torch.as_tensor(pred).reshape(-1).long().cpu()
        g = torch.as_tensor(gt).reshape(-1).long().cpu()
        if p.shape != g.shape:
            raise ValueError(f"prediction has {p.numel()} pixels but ground truth has {g.numel()}")
        keep = g != self.ignore_index
        p, g = p[keep], g[keep]
        n = self.num_classes
        if len(g) and (int(g.min()) < 0 or int(g.max()) >= n):
            raise ValueError(f"ground truth holds values outside 0..{n - 1} and {self.ignore_index}")
        if len(p) and (int(p.min()) < 0 or int(p.max()) >= n):
            raise ValueError(f"prediction holds values outside 0..{n - 1} on evaluated pixels")
        self.matrix += torch.bincount(g * n + p, minlength=n * n).reshape(n, n).numpy()

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another accumulator's counts (e.g. from another DDP rank or split)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """Per-class IoU (float64, NaN where the class is neither in GT nor predicted)."""
        return iou_from_confusion(self.matrix)

    def miou(self, over: Literal["union", "gt"] = "union") -> float:
        return miou_from_confusion(self.matrix, over)

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def summary(self, names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict: miou, pixel_accuracy, per-class IoU by name (None where NaN), pixels."""
        names = list(names) if names is not None else [str(i) for i in range(self.num_classes)]
        ious = self.iou()
        return {"miou": _nan_to_none(self.miou()),
                "pixel_accuracy": _nan_to_none(self.pixel_accuracy()),
                "class_iou": {nm: _nan_to_none(v) for nm, v in zip(names, ious)},
                "pixels": int(self.matrix.sum())}


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    denom = m.sum(0) + m.sum(1) - tp  # TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def miou_from_confusion(matrix: np.ndarray, over: Literal["union", "gt"] = "union") -> float:
    """Mean IoU over classes with a defined IoU (`union`, Cityscapes) or present in the GT (`gt`)."""
    ious = iou_from_confusion(matrix)
    if over == "gt":
        present = np.asarray(matrix).sum(1) > 0
        ious = np.where(present, ious, np.nan)
    elif over != "union":
        raise ValueError(f"over must be 'union' or 'gt', got {over!r}")
    valid = ~np.isnan(ious)
    return float(ious[valid].mean()) if valid.any() else float("nan")


def binary_iou(pred_fg: torch.Tensor | np.ndarray, gt_fg: torch.Tensor | np.ndarray,
               valid: torch.Tensor | np.ndarray | None = None) -> float:
    """Foreground IoU of two 0/1 maps over `valid` pixels (NaN if neither has any foreground)."""
    p = torch.as_tensor(pred_fg).bool()
    g = torch.as_tensor(gt_fg).bool()
    if valid is not None:
        v = torch.as_tensor(valid).bool()
        p, g = p & v, g & v
    union = int((p | g).sum())
    return float((p & g).sum()) / union if union else float("nan")


def class_iou_rows(ious: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Rows `class, iou` for a per-class bar plot CSV (NaN classes left out)."""
    return [{"class": n, "iou": float(v)} for n, v in zip(names, ious) if not np.isnan(v)]


def _nan_to_none(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)
