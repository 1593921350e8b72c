"""The ASPP bottleneck of Hoyer et al.'s depth decoder (`sde.architecture: aspp`).

torchvision's DeepLabV3 ASPP: a 1x1 branch, three 3x3 branches dilated 6/12/18 and an image-pooling
branch, 256 channels each with BatchNorm + ReLU, concatenated, then a 1x1 projection with BatchNorm,
ReLU and dropout 0.5. It replaces the first conv of the U-Net's deepest level (`upconv_4_0`), where
the dilated encoder's 1/16 features give the dilations room.

One change, in the image-pooling branch: GroupNorm instead of BatchNorm.

- In train mode BatchNorm normalises each channel over batch x height x width values. The pooling
  branch is a 1x1 map, so it normalises over the batch alone. With one image per process, which is
  what DDP gives when `sde.batch_size` 4 is split over 4 GPUs, torch raises "Expected more than 1
  value per channel"; Hoyer's users hit this at batch 1.
- With two images, each channel becomes +-1 (up to BatchNorm's eps, then scaled by gamma and shifted
  by beta): the branch says only which of the two images is larger. The image-level context it is meant to carry
  is lost, at any batch it is distorted by the batch's other images, and in eval mode the running
  statistics differ from what training saw.
- GroupNorm (16 groups of 16 channels) normalises each image's pooled vector by itself: the same
  at every batch size, on every DDP split and in train and eval mode, and still a unit-scale output
  like the BatchNorm'd branches beside it.

Skipping BatchNorm only when batch*H*W == 1 was rejected: the network would compute different
functions at batch 1 and batch 2. The other branches keep BatchNorm: they normalise over many
pixels per image (32x32 of them for a 512x512 crop), so batch 1 is fine there.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torchvision.models.segmentation.deeplabv3 import ASPP

ASPP_RATES = (6, 12, 18)
POOLING_GROUPS = 16


class Aspp(ASPP):
    """torchvision's ASPP (`cin` -> `cout` channels) with a GroupNorm image-pooling branch."""

    def __init__(self, cin: int, cout: int = 256, rates: Sequence[int] = ASPP_RATES,
                 pooling_groups: int = POOLING_GROUPS) -> None:
        super().__init__(cin, list(rates), cout)
        if cout % pooling_groups:
            raise ValueError(f"ASPP: {cout} channels do not split into {pooling_groups} groups")
        pooling = self.convs[-1]  # AdaptiveAvgPool2d(1), 1x1 conv, BatchNorm2d, ReLU
        if not isinstance(pooling[2], nn.BatchNorm2d):  # pragma: no cover - torchvision layout changed
            raise TypeError("torchvision's ASPPPooling layout changed: expected BatchNorm2d at index 2")
        pooling[2] = nn.GroupNorm(pooling_groups, cout)
