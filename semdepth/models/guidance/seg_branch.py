"""`seg_branch`: a binary foreground/background head on the depth decoder (SegDepth; SEEM's L_m).

Why it helps depth at all: the head shares the decoder, so the BCE gradient pushes the decoder's
finest features to separate objects from background, which sharpens disparity at object borders.
The head is *training only*: it runs in `forward` only in training mode (so DDP sees its
parameters used inside forward), and `inference_state_dict` leaves it out, so the saved inference
model is exactly the plain monodepth2 network: same keys, same forward, same speed
(tests/test_guidance.py checks this).

SegDepth feeds the full-resolution disparity into a separate U-Net and, in its released code, never
updates that U-Net (its optimiser's `zero_grad` runs between backward and step); here the head sits
on the shared decoder features and trains, as the SEEM paper's binary semantic branch does.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from semdepth.models.depth_decoder import ConvBlock, DepthDecoder, Head
from semdepth.models.depth_net import DepthNet
from semdepth.models.encoder import ResnetEncoder
from semdepth.models.guidance.common import FOREGROUND, foreground_bce, foreground_target

HEAD_PREFIX = "seg_head."


class SegHead(nn.Module):
    """Decoder level-0 features (full resolution) -> one foreground logit per pixel."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.block = ConvBlock(cin, cin)
        self.out = Head(cin, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(feat))


class SegBranchDepthNet(DepthNet):
    """Plain depth network + training-only foreground head; loss weight `seg_weight` (sde.seg_weight)."""

    needs = frozenset({FOREGROUND})

    def __init__(self, encoder: ResnetEncoder, decoder: DepthDecoder, seg_weight: float) -> None:
        super().__init__(encoder, decoder)
        self.seg_weight = float(seg_weight)
        self.seg_head = SegHead(decoder.num_ch_dec[0])

    def forward(self, x: torch.Tensor, batch: Mapping[str, Any] | None = None) -> dict:
        out = super().forward(x, batch)
        if self.training:
            out["seg_logits"] = self.seg_head(out["features"][0])
        return out

    def aux_losses(self, outputs: dict, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits = outputs.get("seg_logits")
        if logits is None:  # eval-mode outputs carry no head prediction
            return {}
        target = foreground_target(batch, tuple(logits.shape[-2:]))
        return {"seg_bce": self.seg_weight * foreground_bce(logits, target)}

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """What the saved SDE keeps: the plain network's keys only."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(HEAD_PREFIX)}
