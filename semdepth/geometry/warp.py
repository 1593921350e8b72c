"""Inverse warping: sample a source image at the projections of the target's pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from semdepth.geometry.camera import ALIGN_CORNERS, backproject, project


def warp(img: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T_src_tgt: torch.Tensor,
         inv_K: torch.Tensor | None = None) -> torch.Tensor:
    """Source image [B,C,H,W] resampled into the target view given the target's depth [B,1,H,W],
    intrinsics K [B,3,3] and T_src_tgt [B,4,4] (target camera -> source camera). Border padding
    as monodepth2; the grid's normalisation matches `ALIGN_CORNERS`."""
    h, w = depth.shape[-2:]
    if inv_K is None:
        inv_K = torch.linalg.inv(K[:, :3, :3].float()).to(depth.dtype)
    grid = project(backproject(depth, inv_K), K, T_src_tgt, h, w)
    return F.grid_sample(img, grid.to(img.dtype), mode="bilinear", padding_mode="border",
                         align_corners=ALIGN_CORNERS)
