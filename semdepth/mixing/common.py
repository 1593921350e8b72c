"""What DepthMix and ClassMix share: pairing, soft targets, blending by a mask.

Targets are carried as per-pixel class distributions plus a validity mask, so labelled frames (one-hot
ground truth) and unlabelled frames (teacher probabilities) can be mixed in one batch (Hoyer's
`mix_use_gt`), and ignore pixels (255) stay ignored wherever they land.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def derangement(batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                ) -> torch.Tensor:
    """A random permutation without fixed points: image k is mixed with image perm[k] != k.

    Built as a random cycle (shuffle, then each element points to the next in the shuffled order), so
    any batch size >= 2 works; Hoyer's implementation only supported exactly 2 images.
    """
    if batch < 2:
        raise ValueError(f"mixing needs at least 2 images per batch, got {batch}")
    order = torch.randperm(batch, generator=generator)
    perm = torch.empty(batch, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm.to(device)


def make_targets(teacher_probs: torch.Tensor, labels: torch.Tensor | None = None,
                 labelled: torch.Tensor | None = None, ignore_index: int = IGNORE
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets [B,C,H,W] and validity [B,H,W] for a mixing batch.

    Rows where `labelled` is True use one-hot ground truth from `labels` (ignored pixels get an all-zero
    distribution and valid=False); the other rows use the teacher's probabilities (all valid).
    """
    probs = teacher_probs.detach().clone()
    b, c, h, w = probs.shape
    valid = torch.ones(b, h, w, dtype=torch.bool, device=probs.device)
    if labels is None or labelled is None or not bool(labelled.any()):
        return probs, valid
    idx = labelled.nonzero().flatten()
    lab = labels[idx].long()
    ok = lab != ignore_index
    onehot = F.one_hot(torch.where(ok, lab, torch.zeros_like(lab)), c).permute(0, 3, 1, 2).to(probs.dtype)
    probs[idx] = onehot * ok[:, None].to(probs.dtype)
    valid[idx] = ok
    return probs, valid


def mix(mask: torch.Tensor, perm: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """out[k] = mask[k]·x[k] + (1 - mask[k])·x[perm[k]] for mask [B,1,H,W] (bool or float).

    Works for images/probabilities [B,C,H,W] and for per-pixel maps [B,H,W] (labels, validity).
    """
    m = mask if x.dim() == 4 else mask[:, 0]
    if x.dtype == torch.bool or not x.dtype.is_floating_point:
        return torch.where(m.bool(), x, x[perm])
    m = m.to(x.dtype)
    return m * x + (1 - m) * x[perm]


def targets_to_labels(probs: torch.Tensor, valid: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Hard labels [B,H,W] (argmax) with `ignore_index` where the target is not valid."""
    lab = probs.argmax(1)
    return torch.where(valid, lab, torch.full_like(lab, ignore_index))
