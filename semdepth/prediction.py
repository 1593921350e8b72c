"""Depth and segmentation for arbitrary images with the trained models (`semdepth predict`).

Each image is resized (area for shrinking, bilinear for enlarging) to the working resolution the
networks were trained at, segmented and given depth there, and the results are resized back to the
image's own size (nearest for the classes, bilinear for depth). Depth is in the SDE's units:
monocular depth has no metric scale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from semdepth import SemdepthError
from semdepth.data.frames import write_png
from semdepth.data.labels import colorize
from semdepth.geometry.depth import disp_to_depth
from semdepth.io import atomic_file
from semdepth.viz import colorize_depth

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted); errors name the bad input."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SemdepthError(f"{p}: folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SemdepthError(f"{p}: no such file or folder")
    return out


def output_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique (`name`, `name_1`, ...) when two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return stems


@torch.no_grad()
def predict_image(seg: torch.nn.Module, depth_net: torch.nn.Module, image: np.ndarray, size: tuple[int, int],
                  depth_range: tuple[float, float], device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 uint8 RGB -> (HxW uint8 train ids, HxW float32 depth in `depth_range`), at the image's size.

    size: (height, width) the networks run at.
    """
    h, w = size
    ih, iw = image.shape[:2]
    interp = cv2.INTER_AREA if ih * iw > h * w else cv2.INTER_LINEAR
    small = cv2.resize(image, (w, h), interpolation=interp)
    x = torch.from_numpy(small).permute(2, 0, 1).float().div(255.0)[None].to(device)
    labels = seg(x, with_depth=False)["logits"].argmax(1)[0].cpu().numpy().astype(np.uint8)
    disp = depth_net(x)["disp"][0]
    depth = disp_to_depth(disp, *depth_range)[1][0, 0].cpu().numpy().astype(np.float32)
    labels = cv2.resize(labels, (iw, ih), interpolation=cv2.INTER_NEAREST)
    depth = cv2.resize(depth, (iw, ih), interpolation=cv2.INTER_LINEAR)
    return labels, depth


def write_prediction(out: Path, stem: str, labels: np.ndarray, depth: np.ndarray, raw: bool) -> None:
    """`<stem>_seg.png` (Cityscapes colours), `<stem>_depth.png` (magma on disparity) and with `raw`
    `<stem>_seg.npy` (uint8 train ids), `<stem>_depth.npy` (float32 depth), each written atomically."""
    for name, arr in ((f"{stem}_seg.png", colorize(labels)), (f"{stem}_depth.png", colorize_depth(depth))):
        with atomic_file(out / name) as tmp:
            write_png(tmp, arr)
    if raw:
        for name, arr in ((f"{stem}_seg.npy", labels), (f"{stem}_depth.npy", depth)):
            with atomic_file(out / name) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
