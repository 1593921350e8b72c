"""Monodepth2-style U-Net decoder.

`UNetDecoder` is the body (3x3 reflection-padded convs + ELU, nearest x2 upsampling, skips from the
encoder) and returns the features of every level; `DepthDecoder` adds sigmoid disparity heads. A
segmentation decoder is the same body with a different head, which is what lets finetune copy the
SDE decoder's weights into the segmenter (METHOD.md §6).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

DECODER_CHANNELS = (16, 32, 64, 128, 256)

# Called as hook(level, x) on the concatenated (upsampled + skip) tensor before the second conv of a
# level; returns the tensor to use. Guidance modules (SEEM) write features in here.
PreFuseHook = Callable[[int, torch.Tensor], torch.Tensor]


class ConvBlock(nn.Module):
    """3x3 conv with reflection padding, then ELU (monodepth2's block)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(cin, cout, 3)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(self.pad(x)))


class Head(nn.Module):
    """3x3 reflection-padded conv to `cout` channels (no activation: callers choose sigmoid/softmax)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class UNetDecoder(nn.Module):
    """Levels 4..0; level i's output has resolution 1/2^i of the input image.

    Conv blocks are in `self.convs` under "upconv_{i}_0" (before upsampling) and "upconv_{i}_1"
    (after concatenating the skip), so subclasses may swap single blocks (e.g. PAC layers).
    """

    def __init__(self, num_ch_enc: Sequence[int], num_ch_dec: Sequence[int] = DECODER_CHANNELS) -> None:
        super().__init__()
        self.num_ch_enc = list(num_ch_enc)
        self.num_ch_dec = list(num_ch_dec)
        self.convs = nn.ModuleDict()
        for i in range(4, -1, -1):
            cin = self.num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            self.convs[f"upconv_{i}_0"] = ConvBlock(cin, self.num_ch_dec[i])
            cin = self.num_ch_dec[i] + (self.num_ch_enc[i - 1] if i > 0 else 0)
            self.convs[f"upconv_{i}_1"] = ConvBlock(cin, self.num_ch_dec[i])

    def decode(self, feats: Sequence[torch.Tensor], pre_fuse: PreFuseHook | None = None) -> dict[int, torch.Tensor]:
        x = feats[-1]
        out: dict[int, torch.Tensor] = {}
        for i in range(4, -1, -1):
            x = self.convs[f"upconv_{i}_0"](x)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if i > 0:
                x = torch.cat([x, feats[i - 1]], dim=1)
            if pre_fuse is not None:
                x = pre_fuse(i, x)
            x = self.convs[f"upconv_{i}_1"](x)
            out[i] = x
        return out

    def forward(self, feats: Sequence[torch.Tensor], pre_fuse: PreFuseHook | None = None) -> dict:
        return {"features": self.decode(feats, pre_fuse)}


class DepthDecoder(UNetDecoder):
    """U-Net body + sigmoid disparity at `scales`: {"disp": {s: [B,C,H/2^s,W/2^s]}, "features": {i: ...}}."""

    def __init__(self, num_ch_enc: Sequence[int], scales: Sequence[int] = (0, 1, 2, 3),
                 num_output_channels: int = 1) -> None:
        super().__init__(num_ch_enc)
        self.scales = tuple(scales)
        self.heads = nn.ModuleDict({str(s): Head(self.num_ch_dec[s], num_output_channels) for s in self.scales})

    def forward(self, feats: Sequence[torch.Tensor], pre_fuse: PreFuseHook | None = None) -> dict:
        levels = self.decode(feats, pre_fuse)
        disp = {s: torch.sigmoid(self.heads[str(s)](levels[s])) for s in self.scales}
        return {"disp": disp, "features": levels}
