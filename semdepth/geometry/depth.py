"""Disparity and depth: how the network's sigmoid output becomes metric-free depth (docs/method.md §3.2)."""
from __future__ import annotations

import torch


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output -> (scaled disparity, depth) with depth in [min_depth, max_depth] (monodepth2)."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled
