"""Scale-invariant log depth loss (Eigen et al. 2014) for supervised probes of the depth network.

Self-supervised depth has no metric scale and is median-scaled before it is scored (docs/method.md
§8), so a supervised ceiling of the same network should not be charged for the scale either: with
d = log D − log D_gt over an image's valid pixels the loss is mean(d²) − λ·mean(d)², which ignores a
per-image scale entirely at λ = 1. λ = 0.85 (the common choice) keeps a weak pull towards the true
scale, which keeps the prediction inside the sigmoid's depth range.
"""
from __future__ import annotations

import torch

LAMBDA = 0.85


def scale_invariant_log_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor,
                             lam: float = LAMBDA) -> torch.Tensor:
    """pred, gt [B,1,H,W] positive depths where `valid` [B,1,H,W] (bool) -> the batch mean of the
    per-image loss. Images without a valid pixel contribute 0."""
    w = valid.to(pred.dtype)
    n = w.sum(dim=(1, 2, 3)).clamp(min=1)
    d = (torch.log(pred) - torch.log(torch.where(valid, gt, torch.ones_like(gt)))) * w
    mean_d = d.sum(dim=(1, 2, 3)) / n
    mean_d2 = (d * d).sum(dim=(1, 2, 3)) / n
    return (mean_d2 - lam * mean_d * mean_d).mean()
