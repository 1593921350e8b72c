"""Hoyer et al.'s phase-2 regulariser: keep the encoder's deepest features near those of its
(frozen) initialisation, so self-supervised depth training does not erase what ImageNet / the
source domain taught it. loss = weight · mean over pixels of ||f - f0||₂ (norm over channels)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


def feature_distance(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w] trained vs frozen features -> scalar mean per-pixel L2 distance."""
    return torch.linalg.vector_norm(features - reference.detach(), ord=2, dim=1).mean()


def frozen_copy(module: nn.Module) -> nn.Module:
    """A frozen eval-mode deep copy (the reference encoder)."""
    ref = copy.deepcopy(module)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class FeatureDistance(nn.Module):
    """Weighted feature distance between `encoder`'s layer4 output and a frozen copy of its weights
    taken at construction time (call before training starts).

    The reference runs in the same train/eval mode as this module (set it like the encoder's): in
    train mode both use batch statistics in BatchNorm, so the distance is exactly zero until the
    weights move. A reference in eval mode would differ from a train-mode encoder from step one and
    pull the encoder towards its running statistics rather than towards its initial weights."""

    def __init__(self, encoder: nn.Module, weight: float) -> None:
        super().__init__()
        self.reference = frozen_copy(encoder)
        self.weight = weight

    def forward(self, x: torch.Tensor, layer4: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self.reference(x)[-1]
        return self.weight * feature_distance(layer4, ref)
