"""README figure of one SynthCity snippet: frames, colourised labels, exact depth, moving objects.

    python -m semdepth.data.synthcity.figure docs/figures/synthcity_snippet.png [--split train --index 2]

Renders with the default parameters (SynthConfig()), so the figure shows what `dvc repro` produces.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels

from semdepth.config import SynthConfig
from semdepth.data.synthcity.render import render_snippet


def _colourise(label: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.color
    return lut[label]


def make_figure(out: Path, split: str = "train", index: int = 2, cfg: SynthConfig | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = cfg or SynthConfig()
    offsets = sorted(cfg.frame_offsets)
    shown = [offsets[0], 0, offsets[-1]]
    scene, frames = render_snippet(cfg, split, index, offsets=shown)
    ann = frames[1]
    inv = np.where(ann.depth > 0, 1.0 / np.maximum(ann.depth, 1e-6), np.nan)
    overlay = ann.image.copy()
    overlay[ann.moving] = (0.4 * overlay[ann.moving] + 0.6 * np.array([255, 40, 40])).astype(np.uint8)

    fig, axes = plt.subplots(2, 3, figsize=(12, 4.3), dpi=72)
    for ax, fr in zip(axes[0], frames):
        ax.imshow(fr.image)
        ax.set_title(f"frame {19 + fr.offset}" + (" (annotated)" if fr.offset == 0 else ""), fontsize=10)
    axes[1, 0].imshow(_colourise(ann.label))
    axes[1, 0].set_title("gtFine labels (cityscapesscripts colours)", fontsize=10)
    axes[1, 1].imshow(inv, cmap="magma", vmin=0, vmax=np.nanpercentile(inv, 99))
    axes[1, 1].set_title("exact depth (1/z; sky and hood invalid)", fontsize=10)
    axes[1, 2].imshow(overlay)
    axes[1, 2].set_title("independently moving objects", fontsize=10)
    for ax in axes.ravel():
        ax.set_axis_off()
    lead = "same-speed lead car" if scene.lead_car else "no lead car"
    fig.suptitle(f"SynthCity {split} {scene.city}_{scene.sequence:06d}: {scene.traj.speed:.1f} m/s, "
                 f"curvature {scene.road.curvature:+.4f}/m, {lead}", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", default="train", choices=["train", "val", "source"])
    ap.add_argument("--index", type=int, default=2)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    args = ap.parse_args()
    cfg = dataclasses.replace(SynthConfig(), height=args.height, width=args.width)
    path = make_figure(args.out, args.split, args.index, cfg)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
