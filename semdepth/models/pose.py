"""Pose network on a stacked pair of frames (monodepth2's `separate_resnet`).

Output: axis-angle and translation of T_b_a (points in a's camera -> b's camera), each x0.01 as in
monodepth2. The translation bias starts at t_z = -forward_init (forward motion from an earlier a to
a later b, docs/contracts.md): with a zero start the pose net can settle on backward motion and the
depth collapses to "road near, everything else at infinity" (measured AbsRel ~1.0; docs/method.md §3.7).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from semdepth.models.encoder import ResnetEncoder

OUTPUT_SCALE = 0.01


class PoseDecoder(nn.Module):
    """1x1 squeeze to 256, two 3x3 convs + ReLU, 1x1 to 6, spatial mean, x0.01."""

    def __init__(self, cin: int, forward_init: float = 0.0) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, 256, 1)
        self.conv1 = nn.Conv2d(256, 256, 3, padding=1)
        self.conv2 = nn.Conv2d(256, 256, 3, padding=1)
        self.out = nn.Conv2d(256, 6, 1)
        self.relu = nn.ReLU(inplace=False)
        with torch.no_grad():
            self.out.bias[5] = -forward_init / OUTPUT_SCALE

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.squeeze(f))
        x = self.relu(self.conv1(x))
        x = self.out(self.relu(self.conv2(x)))
        x = OUTPUT_SCALE * x.mean(dim=(2, 3))
        return x[:, :3], x[:, 3:]


class PoseNet(nn.Module):
    def __init__(self, num_layers: int = 18, forward_init: float = 0.03) -> None:
        super().__init__()
        self.encoder = ResnetEncoder(num_layers, None, in_channels=6)
        self.decoder = PoseDecoder(self.encoder.num_ch_enc[-1], forward_init)

    def forward(self, img_a: torch.Tensor, img_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """img_a, img_b: [B,3,H,W] in [0,1]; returns (axisangle [B,3], translation [B,3]) of T_b_a."""
        return self.decoder(self.encoder(torch.cat([img_a, img_b], dim=1))[-1])
