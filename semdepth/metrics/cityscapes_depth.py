"""The standard Cityscapes depth protocol (`eval.protocol: cityscapes`), as ManyDepth (Watson et al.,
CVPR 2021) evaluates models trained on Cityscapes.

- Frames: the `test` split's 1525 annotated frames (`data.splits` must include `test`).
- GT: depth from the disparity maps, `depth = baseline * fx / ((p - 1) / 256)` for 16-bit values
  p > 1, with the full-resolution `fx` of each frame's camera json (`depth_from_disparity`, which is
  the prepare step's conversion in semdepth/data/cityscapes.py).
- Region: at the full 1024x2048 resolution the bottom 25% of the rows (the ego car) are cut, and of
  the remaining 768x2048 the crop `[256:, 192:1856]` is kept: rows 256..767 and columns 192..1855 of
  the frame, 512x1664 pixels. `cityscapes_eval_mask(h, w)` is that region scaled to the evaluated
  resolution (rows [h/4, 3h/4), columns [0.09375 w, 0.90625 w)).
- Depth range 1e-3 to 80 m (`eval.min_depth`, `eval.max_depth`), per-image median scaling, then
  clamping: the same as the project protocol (semdepth/metrics/depth.py).

Differences from ManyDepth's script, both about what the network sees, not the scoring: ManyDepth's
networks see only the top 3/4 of each frame (it crops the input too) and its prediction is resized
to 768x2048 before cropping; here the network sees the whole frame and the region is applied at the
prepared resolution (GT nearest-resized, prediction bilinear), so the same numbers are comparable
only up to that resampling.

`project` (the default protocol) scores the val split, excluding only the bottom
`data.hood_fraction` of the rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PROTOCOLS = ("project", "cityscapes")
TEST_SPLIT = "test"
TEST_FRAMES = 1525  # ManyDepth's Cityscapes test set: every frame of Cityscapes' test split
FULL_HEIGHT, FULL_WIDTH = 1024, 2048
KEPT_ROWS = 768  # the top 3/4: the bottom 25% shows the ego car
CROP_ROWS = (256, KEPT_ROWS)  # [256:] of the kept rows
CROP_COLS = (192, 1856)  # [192:1856]


def crop_bounds(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), half-open, of the evaluated region at `height` x `width`."""
    def scale(v: int, full: int, n: int) -> int:
        return int(round(v * n / full))

    return (scale(CROP_ROWS[0], FULL_HEIGHT, height), scale(CROP_ROWS[1], FULL_HEIGHT, height),
            scale(CROP_COLS[0], FULL_WIDTH, width), scale(CROP_COLS[1], FULL_WIDTH, width))


def cityscapes_eval_mask(height: int, width: int) -> np.ndarray:
    """Boolean [height, width] map of the pixels the protocol scores."""
    top, bottom, left, right = crop_bounds(height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def restrict_to_protocol(gt: np.ndarray, protocol: str) -> np.ndarray:
    """GT depth with every pixel outside the protocol's region set to 0 (invalid GT); unchanged for
    the project protocol."""
    if protocol == "project":
        return gt
    if protocol != "cityscapes":
        raise ValueError(f"eval.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    return np.where(cityscapes_eval_mask(*gt.shape), gt, 0).astype(gt.dtype, copy=False)


def protocol_split(protocol: str, split: str) -> str:
    """The split the protocol evaluates: `test` for cityscapes, else the caller's."""
    return TEST_SPLIT if protocol == "cityscapes" else split


def missing_split_hint(protocol: str) -> str:
    """Appended to the "no frames to evaluate" error."""
    if protocol != "cityscapes":
        return ""
    return (f" (eval.protocol cityscapes scores the {TEST_SPLIT} split's {TEST_FRAMES} frames: "
            f"add {TEST_SPLIT} to data.splits and rerun downsample)")


def depth_from_disparity(disparity_png: str | Path, camera_json: str | Path) -> np.ndarray:
    """Full-resolution GT depth (metres, float32, 0 = invalid) of one Cityscapes frame from its
    disparity PNG and camera json: baseline * fx / ((p - 1) / 256), the conversion downsample uses."""
    from semdepth.data.cityscapes import disparity_to_depth, read_camera, read_gray

    cam = read_camera(Path(camera_json))
    return disparity_to_depth(read_gray(Path(disparity_png), np.uint16, "disparity"), cam.baseline, cam.fx)
