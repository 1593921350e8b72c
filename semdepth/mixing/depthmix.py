"""DepthMix (Hoyer et al. 2021, §4): paste image i onto image j where i is closer.

M = [d_i >= d_j - margin] on per-image min-max-normalised disparity: the nearer pixel wins, so an
object pasted from i correctly occludes j's background and is itself occluded by j's nearer objects.
The small margin resolves near-ties (e.g. both roads) towards i, which the authors found avoids
speckled road mixes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from semdepth.mixing.common import mix


def normalise_disparity(disp: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image min-max normalisation to [0, 1]; absolute scale differs between images (monocular)."""
    flat = disp.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    return (disp - lo) / (hi - lo).clamp_min(eps)


def depthmix_masks(disp: torch.Tensor, perm: torch.Tensor, margin: float = 0.03,
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean masks [B,1,H,W]: True where image k (not image perm[k]) shows in mixed image k.

    `disp` is [B,1,h,w] disparity (larger = closer); resized bilinearly to `size` if given.
    """
    if disp.dim() != 4 or disp.shape[1] != 1:
        raise ValueError(f"disparity must be [B,1,H,W], got {tuple(disp.shape)}")
    d = disp.detach().float()
    if size is not None and tuple(d.shape[-2:]) != tuple(size):
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
    d = normalise_disparity(d)
    return d >= d[perm] - margin


def depthmix(images: torch.Tensor, probs: torch.Tensor, valid: torch.Tensor, disp: torch.Tensor,
             perm: torch.Tensor, margin: float = 0.03
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix images [B,3,H,W], soft targets [B,C,H,W] and validity [B,H,W] with one mask per pair.

    Returns (images, probs, valid, mask).
    """
    mask = depthmix_masks(disp, perm, margin, size=tuple(images.shape[-2:]))
    return mix(mask, perm, images), mix(mask, perm, probs), mix(mask, perm, valid), mask
