"""ClassMix (Olsson et al. 2021), the comparison for DepthMix: paste half the classes of image i.

For each pair (k, perm[k]) the classes present in image k's (pseudo-)labels are shuffled and the
first ceil(n/2) are pasted onto image perm[k]; unlike DepthMix, nothing decides which pixel is in
front, so pasted objects float over whatever they cover.
"""
from __future__ import annotations

import math

import torch

from semdepth.mixing.common import IGNORE, mix


def classmix_masks(labels: torch.Tensor, generator: torch.Generator | None = None,
                   ignore_index: int = IGNORE) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Boolean masks [B,1,H,W] (pixels of the chosen classes of image k) and the chosen classes."""
    masks, chosen = [], []
    for lab in labels:
        classes = torch.unique(lab)
        classes = classes[classes != ignore_index]
        n = math.ceil(len(classes) / 2)
        pick = classes[torch.randperm(len(classes), generator=generator)[:n].to(classes.device)]
        chosen.append(pick)
        masks.append(torch.isin(lab, pick))
    return torch.stack(masks)[:, None], chosen


def classmix(images: torch.Tensor, probs: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor,
             perm: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix images, soft targets and validity; `labels` [B,H,W] pick the classes. Returns (..., mask)."""
    mask, _ = classmix_masks(labels, generator)
    return mix(mask, perm, images), mix(mask, perm, probs), mix(mask, perm, valid), mask
