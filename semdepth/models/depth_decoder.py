"""Monodepth2-style U-Net decoder.

`UNetDecoder` is the body (3x3 reflection-padded convs + ELU, nearest x2 upsampling, skips from the
encoder) and returns the features of every level; `DepthDecoder` adds sigmoid disparity heads. A
segmentation decoder is the same body with a different head, which is what lets finetune copy the
SDE decoder's weights into the segmenter (docs/method.md §7.1).

`sde.architecture: aspp` (Hoyer et al.) uses the same body with wider levels and an ASPP block as the
deepest level's first conv, on an encoder whose layer4 is dilated: the two deepest encoder features
then share 1/16, and a level upsamples only when its input is coarser than its skip.
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
    `aspp=True` makes "upconv_4_0" the ASPP bottleneck (semdepth/models/aspp.py).
    `checkpointing` (`semdepth.models.checkpointing`) recomputes each level in the backward pass
    (levels with a `pre_fuse` hook run as usual: the hook may keep references to their tensors).
    """

    checkpointing: bool = False

    def __init__(self, num_ch_enc: Sequence[int], num_ch_dec: Sequence[int] = DECODER_CHANNELS,
                 aspp: bool = False) -> None:
        super().__init__()
        self.num_ch_enc = list(num_ch_enc)
        self.num_ch_dec = list(num_ch_dec)
        self.convs = nn.ModuleDict()
        for i in range(4, -1, -1):
            cin = self.num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            if i == 4 and aspp:
                from semdepth.models.aspp import Aspp

                self.convs[f"upconv_{i}_0"] = Aspp(cin, self.num_ch_dec[i])
            else:
                self.convs[f"upconv_{i}_0"] = ConvBlock(cin, self.num_ch_dec[i])
            cin = self.num_ch_dec[i] + (self.num_ch_enc[i - 1] if i > 0 else 0)
            self.convs[f"upconv_{i}_1"] = ConvBlock(cin, self.num_ch_dec[i])

    def _level(self, i: int, x: torch.Tensor, skip: torch.Tensor | None,
               pre_fuse: PreFuseHook | None = None) -> torch.Tensor:
        x = self.convs[f"upconv_{i}_0"](x)
        if skip is None or x.shape[-1] < skip.shape[-1]:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        if pre_fuse is not None:
            x = pre_fuse(i, x)
        return self.convs[f"upconv_{i}_1"](x)

    def level(self, i: int, x: torch.Tensor, feats: Sequence[torch.Tensor],
              pre_fuse: PreFuseHook | None = None) -> torch.Tensor:
        """Level i on the previous level's output `x` (the deepest encoder feature for i = 4): first
        conv, nearest x2 upsampling unless `x` already has the skip's resolution (the dilated encoder's
        layer3 and layer4 are both at 1/16), the skip `feats[i-1]`, the hook, the second conv."""
        skip = feats[i - 1] if i > 0 else None
        if self.checkpointing and pre_fuse is None:
            from semdepth.models.checkpointing import run

            if skip is None:
                return run(self, x, fn=lambda t: self._level(i, t, None))
            return run(self, x, skip, fn=lambda t, s: self._level(i, t, s))
        return self._level(i, x, skip, pre_fuse)

    def decode(self, feats: Sequence[torch.Tensor], pre_fuse: PreFuseHook | None = None) -> dict[int, torch.Tensor]:
        x = feats[-1]
        out: dict[int, torch.Tensor] = {}
        for i in range(4, -1, -1):
            x = self.level(i, x, feats, pre_fuse)
            out[i] = x
        return out

    def forward(self, feats: Sequence[torch.Tensor], pre_fuse: PreFuseHook | None = None) -> dict:
        return {"features": self.decode(feats, pre_fuse)}


class DepthDecoder(UNetDecoder):
    """U-Net body + sigmoid disparity at `scales`: {"disp": {s: [B,C,H/2^s,W/2^s]}, "features": {i: ...}}."""

    def __init__(self, num_ch_enc: Sequence[int], scales: Sequence[int] = (0, 1, 2, 3),
                 num_output_channels: int = 1, num_ch_dec: Sequence[int] = DECODER_CHANNELS,
                 aspp: bool = False) -> None:
        super().__init__(num_ch_enc, num_ch_dec, aspp)
        self.scales = tuple(scales)
        self.heads = nn.ModuleDict({str(s): Head(self.num_ch_dec[s], num_output_channels) for s in self.scales})

    def forward(self, feats: Sequence[torch.Tensor], pre_fuse: PreFuseHook | None = None) -> dict:
        levels = self.decode(feats, pre_fuse)
        disp = {s: torch.sigmoid(self.heads[str(s)](levels[s])) for s in self.scales}
        return {"disp": disp, "features": levels}
