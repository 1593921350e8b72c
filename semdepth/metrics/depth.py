"""Depth evaluation, docs/method.md §8 (monodepth2 / ManyDepth protocol).

Per image: valid GT in (min_depth, max_depth], the bottom `hood_fraction` of the rows (ego hood)
excluded; the prediction is median-scaled (ratio of medians over the valid pixels: monocular depth
has no scale) and clamped to [min_depth, max_depth]; the 7 standard metrics are computed per image
and averaged over images.

Region metrics (per class, moving objects, semantic-edge band) use the same per-image median
scaling but pool pixels over the whole set: AbsRel of a class is the mean of |d-d*|/d* over all its
valid pixels in all images. Pooling keeps small or rare regions (a pedestrian of 30 pixels) from
swinging the average the way a per-image mean would.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def hood_rows(height: int, hood_fraction: float) -> int:
    """Number of bottom rows showing the ego hood (excluded from evaluation)."""
    return int(round(height * hood_fraction))


def valid_mask(gt: np.ndarray, min_depth: float, max_depth: float, hood_fraction: float = 0.0) -> np.ndarray:
    """GT in (min, max] and above the hood."""
    mask = (gt > min_depth) & (gt <= max_depth)
    n = hood_rows(gt.shape[0], hood_fraction)
    if n:
        mask[gt.shape[0] - n:] = False
    return mask


def median_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    return float(np.median(gt[mask]) / max(np.median(pred[mask]), 1e-12))


def errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The 7 metrics over two 1-D arrays of matching valid pixels."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def compute_depth_metrics(pred, gt, mask, min_depth: float = 1e-3, max_depth: float = 80.0,
                          median_scaling: bool = True) -> dict[str, float]:
    """One image: pred/gt [H,W] depth (numpy or torch), mask [H,W] bool of valid pixels (typically
    `valid_mask`). Returns the 7 metrics plus "scale" (the median ratio applied, 1 if unscaled)."""
    pred, gt, mask = (np.asarray(a.detach().cpu() if hasattr(a, "detach") else a) for a in (pred, gt, mask))
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("no valid ground-truth pixels")
    p, g = pred[mask].astype(np.float64), gt[mask].astype(np.float64)
    scale = median_scale(p, g, np.ones_like(p, dtype=bool)) if median_scaling else 1.0
    p = np.clip(p * scale, min_depth, max_depth)
    out = errors(p, g)
    out["scale"] = scale
    return out


def foreground_of(labels: np.ndarray) -> np.ndarray:
    """Binary foreground map from train ids (SEEM's set; ignore -> background)."""
    from semdepth.data.labels import FOREGROUND_LUT

    return FOREGROUND_LUT[labels.astype(np.uint8)] if labels.dtype != np.uint8 else FOREGROUND_LUT[labels]


def edge_band(binary: np.ndarray, band: int) -> np.ndarray:
    """Pixels within `band` px (Chebyshev) of a foreground/background boundary.

    Boundary pixels are those with a 4-neighbour of the other value (both sides of the edge)."""
    b = binary.astype(bool)
    edge = np.zeros_like(b)
    dv = b[1:] != b[:-1]
    dh = b[:, 1:] != b[:, :-1]
    edge[1:] |= dv
    edge[:-1] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    if band > 0 and edge.any():
        import cv2

        kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
        edge = cv2.dilate(edge.astype(np.uint8), kernel).astype(bool)
    return edge


class _Pool:
    """Running sum of |d-d*|/d* and count over pooled pixels."""

    def __init__(self) -> None:
        self.sum, self.n = 0.0, 0

    def add(self, p: np.ndarray, g: np.ndarray) -> None:
        if p.size:
            self.sum += float(np.sum(np.abs(g - p) / g))
            self.n += int(p.size)

    def value(self) -> float | None:
        return self.sum / self.n if self.n else None


class DepthEvaluator:
    """Accumulates per image: the 7 metrics (averaged over images), per-class AbsRel (GT labels, else
    pseudo-labels), AbsRel on moving objects and in a band around semantic edges (pixel-pooled).

    `median_scaling=False` evaluates raw metric depth (the row-median prior is reported both ways).
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 80.0, hood_fraction: float = 0.0,
                 edge_band_px: int = 3, class_names: Sequence[str] | None = None, median_scaling: bool = True) -> None:
        if class_names is None:
            from semdepth.data.labels import TRAIN_NAMES

            class_names = TRAIN_NAMES
        self.min_depth, self.max_depth, self.hood_fraction = min_depth, max_depth, hood_fraction
        self.band, self.names, self.median_scaling = edge_band_px, list(class_names), median_scaling
        self.per_image: list[dict[str, float]] = []
        self.classes = [_Pool() for _ in self.names]
        self.moving, self.static, self.edge, self.interior = _Pool(), _Pool(), _Pool(), _Pool()
        self.label_sources: set[str] = set()
        self.skipped = 0

    def add(self, pred: np.ndarray, gt: np.ndarray, labels: np.ndarray | None = None,
            pseudo_labels: np.ndarray | None = None, moving: np.ndarray | None = None,
            foreground: np.ndarray | None = None) -> dict[str, float] | None:
        """One image (all [H,W] numpy). `labels`/`pseudo_labels`: train ids (255 ignore); `moving`:
        nonzero on independently moving objects; `foreground`: binary map used for the edge band when
        no labels are given. Returns the image's metrics (None if it has no valid GT)."""
        pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
        mask = valid_mask(gt, self.min_depth, self.max_depth, self.hood_fraction)
        if not mask.any():
            self.skipped += 1
            return None
        m = compute_depth_metrics(pred, gt, mask, self.min_depth, self.max_depth, self.median_scaling)
        self.per_image.append(m)
        scaled = np.clip(pred * m["scale"], self.min_depth, self.max_depth)

        def pool(target: _Pool, region: np.ndarray) -> None:
            sel = mask & region
            target.add(scaled[sel], gt[sel])

        lab = labels if labels is not None else pseudo_labels
        if lab is not None:
            self.label_sources.add("gt" if labels is not None else "pseudo")
            for c, p in enumerate(self.classes):
                pool(p, lab == c)
            fg = foreground_of(lab)
        else:
            fg = foreground
        if moving is not None:
            mv = np.asarray(moving) > 0
            pool(self.moving, mv)
            pool(self.static, ~mv)
        if fg is not None:
            band = edge_band(np.asarray(fg) > 0, self.band)
            pool(self.edge, band)
            pool(self.interior, ~band)
        return m

    def result(self) -> dict:
        if not self.per_image:
            raise ValueError("no image with valid ground truth was evaluated")
        out: dict = {k: float(np.mean([m[k] for m in self.per_image])) for k in METRIC_NAMES}
        out["n_images"] = len(self.per_image)
        out["median_scale"] = float(np.median([m["scale"] for m in self.per_image]))
        per_class = {n: p.value() for n, p in zip(self.names, self.classes) if p.value() is not None}
        if per_class:
            out["class_abs_rel"] = per_class
            out["class_mean_abs_rel"] = float(np.mean(list(per_class.values())))
            out["class_labels"] = "+".join(sorted(self.label_sources))
        for key, pool in (("moving_abs_rel", self.moving), ("static_abs_rel", self.static),
                          ("edge_abs_rel", self.edge), ("interior_abs_rel", self.interior)):
            if pool.value() is not None:
                out[key] = pool.value()
        return out


class RowMedianPrior:
    """The trivial reference: per image row, the median of all valid training GT depths in that row.

    It captures the "road gets farther towards the horizon" prior that any depth network learns first;
    a network worth its training must beat it. Rows without any valid GT take the nearest row's value.
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 80.0, hood_fraction: float = 0.0) -> None:
        self.min_depth, self.max_depth, self.hood_fraction = min_depth, max_depth, hood_fraction
        self.rows: list[list[np.ndarray]] | None = None
        self.profile: np.ndarray | None = None
        self.width = 0

    def add(self, gt: np.ndarray) -> None:
        gt = np.asarray(gt, np.float64)
        if self.rows is None:
            self.rows = [[] for _ in range(gt.shape[0])]
            self.width = gt.shape[1]
        if gt.shape[0] != len(self.rows):
            raise ValueError(f"GT height {gt.shape[0]} differs from the first image's {len(self.rows)}")
        mask = valid_mask(gt, self.min_depth, self.max_depth, self.hood_fraction)
        for r in range(gt.shape[0]):
            if mask[r].any():
                self.rows[r].append(gt[r][mask[r]])

    def fit(self) -> "RowMedianPrior":
        if self.rows is None:
            raise ValueError("row-median prior: no training ground truth was given")
        med = np.array([np.median(np.concatenate(r)) if r else np.nan for r in self.rows])
        ok = np.flatnonzero(~np.isnan(med))
        if not ok.size:
            raise ValueError("row-median prior: no valid training ground truth")
        idx = np.arange(len(med))
        nearest = ok[np.abs(idx[:, None] - ok[None, :]).argmin(1)]
        self.profile = med[nearest]
        return self

    def predict(self, height: int | None = None, width: int | None = None) -> np.ndarray:
        if self.profile is None:
            self.fit()
        h = len(self.profile) if height is None else height
        w = self.width if width is None else width
        if h != len(self.profile):
            raise ValueError(f"row-median prior was fitted at height {len(self.profile)}, asked for {h}")
        return np.repeat(self.profile[:, None], w, axis=1)
