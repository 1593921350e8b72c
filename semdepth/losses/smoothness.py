"""Edge-aware smoothness on mean-normalised disparity (monodepth2), weight 1e-3·2^-s per scale.

Normalising by the mean removes the incentive to shrink the disparity just to lower this term.
"""
from __future__ import annotations

import torch


def smoothness_loss(disp: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """disp [B,1,h,w] and the colour image at the same size [B,3,h,w] -> scalar."""
    d = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    dx = (d[..., :, :-1] - d[..., :, 1:]).abs()
    dy = (d[..., :-1, :] - d[..., 1:, :]).abs()
    ix = (img[..., :, :-1] - img[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def scale_weight(weight: float, scale: int) -> float:
    return weight / (2 ** scale)
