"""Photometric error of monodepth2: pe = 0.85·clamp((1-SSIM)/2, 0, 1) + 0.15·|a-b|, averaged over RGB.

SSIM uses a uniform 3x3 box (avg_pool) on reflection-padded images, σ² = E[x²] - μ², C1 = 0.01²,
C2 = 0.03² for intensities in [0, 1] (reference/sde_anchors.md §1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

C1 = 0.01 ** 2
C2 = 0.03 ** 2
ALPHA = 0.85


def _box_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.full((channels, 1, 3, 3), 1.0 / 9.0, dtype=dtype, device=device)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel, per-channel SSIM map [B,C,H,W] (1 for identical images)."""
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    # All five moments in one 3x3 box filter. A depthwise convolution with a 1/9 kernel computes the
    # same as avg_pool2d(3, 1) but is ~3x faster forward+backward on CPU (benchmarks/sde_step.py).
    c = x.shape[1]
    stacked = torch.cat([x, y, x * x, y * y, x * y], 1)
    m = F.conv2d(stacked, _box_kernel(stacked.shape[1], stacked.dtype, stacked.device), groups=stacked.shape[1])
    mu_x, mu_y, xx, yy, xy = m.split(c, dim=1)
    sigma_x = xx - mu_x * mu_x
    sigma_y = yy - mu_y * mu_y
    sigma_xy = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + C1) * (2 * sigma_xy + C2)
    den = (mu_x * mu_x + mu_y * mu_y + C1) * (sigma_x + sigma_y + C2)
    return num / den


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.clamp((1 - ssim(x, y)) / 2, 0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] pair -> [B,1,H,W] error (target may be broadcast along the batch)."""
    if target.shape != pred.shape:
        target = target.expand_as(pred)
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return ALPHA * ssim_loss(pred, target).mean(1, keepdim=True) + (1 - ALPHA) * l1
