"""Pictures for people: colourised depth and segmentation, evaluation figures (PNG).

Why PNGs as well as DVC plots: `dvc plots show` writes HTML that loads Vega from a CDN and is blank
offline (ARCHITECTURE.md, pitfalls); PNGs open anywhere and the README embeds them.
Depth is shown as disparity (1/depth), normalised per image between its 5th and 95th percentile,
with the magma colour map: near is bright, far is dark, as in monodepth2's figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def colorize_depth(depth: np.ndarray, lo_pct: float = 5.0, hi_pct: float = 95.0) -> np.ndarray:
    """HxW depth (any positive units) -> HxWx3 uint8 RGB (magma on normalised disparity)."""
    from matplotlib import colormaps

    disp = 1.0 / np.maximum(np.asarray(depth, np.float64), 1e-6)
    lo, hi = np.percentile(disp, [lo_pct, hi_pct])
    norm = np.clip((disp - lo) / max(hi - lo, 1e-12), 0, 1)
    return (colormaps["magma"](norm)[..., :3] * 255).round().astype(np.uint8)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str],
              row_labels: Sequence[str] | None = None) -> None:
    """A table of HxWx3 uint8 images (one list per row, one column per title) as one PNG."""
    plt = _plt()
    n, m = len(rows), len(titles)
    h, w = rows[0][0].shape[:2]
    scale = 2.2 / max(h, 1)
    fig, axes = plt.subplots(n, m, figsize=(m * w * scale, n * h * scale + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = axes[i][j]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_bar(path: str | Path, names: Sequence[str], values: Sequence[float], title: str, xlabel: str,
             xlim: tuple[float, float] | None = (0.0, 1.0)) -> None:
    """Horizontal bar chart (e.g. per-class IoU)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.28 * max(len(names), 1) + 1.0))
    y = np.arange(len(names))
    ax.barh(y, values, color="#4477aa")
    ax.set_yticks(y, list(names), fontsize=8)
    ax.invert_yaxis()
    if xlim is not None:
        ax.set_xlim(*xlim)
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:.3f}", va="center", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_confusion(path: str | Path, matrix: np.ndarray, names: Sequence[str], title: str) -> None:
    """Row-normalised confusion matrix (rows = ground truth) as a heat map; empty rows stay blank."""
    plt = _plt()
    m = np.asarray(matrix, np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.full_like(m, np.nan), where=rows > 0)
    k = len(names)
    fig, ax = plt.subplots(figsize=(0.38 * k + 2, 0.38 * k + 1.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), list(names), rotation=90, fontsize=7)
    ax.set_yticks(range(k), list(names), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
