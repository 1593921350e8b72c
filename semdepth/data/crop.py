"""Random training crops (Hoyer et al. train both networks on 512x512 crops of 1024x512 frames).

Why a module of its own: the SDE triplets and the finetune batches crop differently shaped items, but
both need the same three facts, and getting any of them wrong silently breaks the geometry:
- the crop box is drawn from the item's own generator, after every other draw, so a run without
  crops keeps its random stream (and its results) bit for bit;
- every image of one sample (target, sources, labels, foreground, depth) is cut with the same box;
- the intrinsics follow the box: the principal point moves by the box's corner, the focal lengths do
  not change (a crop is a smaller sensor, not another lens).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from semdepth import SemdepthError


class Box(NamedTuple):
    """Top-left corner and size of a crop, in pixels of the uncropped frame."""

    top: int
    left: int
    height: int
    width: int


def crop_size(height: int, width: int) -> tuple[int, int] | None:
    """(height, width) from a config's crop_height/crop_width, or None for no crop (both 0)."""
    return (int(height), int(width)) if height and width else None


def check_crop(key: str, crop: tuple[int, int] | None, frame_height: int, frame_width: int) -> None:
    """One-line error naming `key` when the crop does not fit in the frames it will cut."""
    if crop is not None and (crop[0] > frame_height or crop[1] > frame_width):
        raise SemdepthError(f"{key}.crop_height/crop_width: crop {crop[0]}x{crop[1]} is larger than the "
                            f"{frame_height}x{frame_width} frames")


def random_box(gen: torch.Generator, frame_height: int, frame_width: int, crop: tuple[int, int]) -> Box:
    """A uniformly placed crop box: one draw of two uniforms from `gen`, always (also for a full-frame crop)."""
    return box_at(torch.rand(2, generator=gen), frame_height, frame_width, crop)


def box_at(u: torch.Tensor, frame_height: int, frame_width: int, crop: tuple[int, int]) -> Box:
    """The box whose corner sits at fractions u = (u_top, u_left) in [0, 1) of the free range. Callers that
    draw before they know the frame size (finetune draws a batch's boxes before it reads the images) keep
    the uniforms and place the boxes later."""
    ch, cw = crop
    top = min(int(float(u[0]) * (frame_height - ch + 1)), frame_height - ch)
    left = min(int(float(u[1]) * (frame_width - cw + 1)), frame_width - cw)
    return Box(top, left, ch, cw)


def crop_image(x: torch.Tensor, box: Box) -> torch.Tensor:
    """The box of a [..., H, W] tensor (a view; callers that keep it past the source may clone)."""
    return x[..., box.top:box.top + box.height, box.left:box.left + box.width]


def crop_intrinsics(K: torch.Tensor, box: Box) -> torch.Tensor:
    """K of the cropped image: pixel (u, v) of the crop is (u + left, v + top) of the frame."""
    K = K.clone()
    K[..., 0, 2] -= box.left
    K[..., 1, 2] -= box.top
    return K
