"""The depth network of the SDE: a ResNet encoder and the monodepth2 U-Net decoder.

`DepthNet` is the plain monodepth2 network and the base class of the guided variants
(semdepth/models/guidance/): they override `forward` to use extra batch inputs (named in `needs`) and
`aux_losses` to add their loss terms. It lives apart from the checkpoint code in `sde.py` so that the
guidance modules can subclass it without importing the module that builds them.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from semdepth.models.depth_decoder import DepthDecoder
from semdepth.models.encoder import ResnetEncoder


class DepthNet(nn.Module):
    """Encoder + depth decoder. forward(x, batch=None) -> decoder dict plus "encoder": the 5 features."""

    # extra training-batch inputs a guided subclass reads (its losses/targets); in eval mode every
    # guided network reads only the image, so inference code never supplies these
    needs: frozenset[str] = frozenset()

    def __init__(self, encoder: ResnetEncoder, decoder: DepthDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor, batch: Mapping[str, Any] | None = None) -> dict:
        feats = self.encoder(x)
        out = self.decoder(feats)
        out["encoder"] = feats
        return out

    def aux_losses(self, outputs: dict, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Extra, already weighted loss terms (guidance); plain monodepth2 has none."""
        return {}

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """What `save_sde` keeps; training-only guidance heads (seg_branch) leave theirs out."""
        return self.state_dict()
