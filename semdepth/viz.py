"""Pictures for people: colourised depth and segmentation, evaluation figures (PNG).

Why PNGs as well as DVC plots: `dvc plots show` writes HTML that loads Vega from a CDN and is blank
offline (docs/architecture.md, pitfalls); PNGs open anywhere and the README embeds them.
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


def save_ground_figure(path: str | Path, image: np.ndarray, depth: np.ndarray, below: np.ndarray,
                       candidates: np.ndarray, title: str) -> None:
    """The filter's figure: the frame with below-ground pixels (red) and the ground candidates (green)
    | its stage-1 inverse depth. image HxWx3 uint8, depth HxW, below/candidates HxW bool."""
    plt = _plt()
    over = image.astype(np.float32) / 255.0
    over[candidates] = 0.6 * over[candidates] + 0.4 * np.array([0.0, 1.0, 0.0])
    over[below] = np.array([1.0, 0.0, 0.0])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].imshow(over)
    ax[0].set_title("below ground (red), ground candidates (green)", fontsize=8)
    ax[1].imshow(1.0 / np.maximum(depth, 1e-6), cmap="magma")
    ax[1].set_title("stage-1 inverse depth", fontsize=8)
    for a in ax:
        a.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_filter_sweep(path: str | Path, margins: Sequence[float], thresholds_px: Sequence[float],
                      panels: Sequence[tuple[str, np.ndarray]], chosen: tuple[float, float], title: str) -> None:
    """The filter's margin/threshold sweep: one panel per (y label, values [len(margins), len(thresholds)]),
    the value against the margin with one line per threshold; the configured (margin, threshold) starred."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(1, len(thresholds_px))))
    for ax, (label, values) in zip(axes[0], panels):
        for k, t in enumerate(thresholds_px):
            ax.plot(margins, values[:, k], marker="o", ms=3, lw=1.2, color=colours[k], label=f"{t:g} px")
        if chosen[0] in margins and chosen[1] in thresholds_px:
            y = values[list(margins).index(chosen[0]), list(thresholds_px).index(chosen[1])]
            ax.plot([chosen[0]], [y], marker="*", ms=14, color="red", ls="none", label="configured")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("margin (camera heights)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(title="threshold (at ref. area)", fontsize=7, title_fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
