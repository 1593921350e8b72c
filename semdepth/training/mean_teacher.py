"""Mean teacher (Tarvainen & Valpola 2017) as used by Hoyer et al. / DACS.

The teacher is an exponential moving average of the student: α_t = min(1 - 1/(t+1), α_max), so early
on (t small) the teacher follows the student closely instead of averaging in the random init. Its
pseudo-labels on clean images are weighted by the fraction of confident pixels, one scalar per batch,
so a batch the teacher is unsure about contributes little.

Unlike Hoyer's code (teacher in train mode, batch statistics), floating-point buffers (BatchNorm
running statistics) are averaged too and the teacher runs in eval mode, which makes its predictions
independent of the batch composition.
"""
from __future__ import annotations

import copy

import torch


def ema_alpha(step: int, max_alpha: float) -> float:
    """α at optimisation step `step` (0-based): min(1 - 1/(step+1), max_alpha)."""
    return min(1.0 - 1.0 / (step + 1), max_alpha)


def make_teacher(student: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of the student in eval mode."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float) -> None:
    """teacher ← α·teacher + (1-α)·student for every entry the teacher has (parameters and float
    buffers); integer buffers (BatchNorm's num_batches_tracked) are copied. Student entries the teacher
    lacks (e.g. the pose net, which the teacher never needs) are ignored."""
    src = student.state_dict()
    for name, t in teacher.state_dict().items():
        s = src[name]
        if t.dtype.is_floating_point:
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        else:
            t.copy_(s)


def confidence_weight(probs: torch.Tensor, threshold: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of (valid) pixels whose max class probability is >= threshold; a scalar tensor.

    `probs` [B,C,H,W]; `valid` [B,H,W] excludes ignore pixels (e.g. ground truth 255 mixed in) from
    the count, so void regions of labelled frames do not shrink the weight.
    """
    conf = probs.max(1).values >= threshold
    if valid is None:
        return conf.float().mean()
    n = valid.sum()
    if int(n) == 0:
        return probs.new_zeros(())
    return (conf & valid).sum().float() / n.float()
