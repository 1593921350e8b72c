"""ResNet encoder for the SDE (and the pose net) built from torchvision's ResNets.

Why the layers sit directly on the module (conv1, bn1, layer1..layer4) instead of inside a wrapped
torchvision model: the state dict then has exactly torchvision's key names (minus the classifier),
so ImageNet files, our source-domain pseudo-label backbone and the SDE encoder are interchangeable
and `load_backbone` can check every tensor by name and shape. Nothing is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torchvision

from semdepth import SemdepthError
from semdepth.models.checkpoint import load_file, state_dict_problems
from semdepth.models.deeplab import dilate_basic_layer

_BUILDERS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
OUTPUT_STRIDES = (16, 32)
_WEIGHTS = {18: "ResNet18_Weights", 34: "ResNet34_Weights", 50: "ResNet50_Weights", 101: "ResNet101_Weights"}
# Keys of a torchvision ResNet that the encoder does not have (the ImageNet classifier).
_IGNORED_PREFIXES = ("fc.",)


def imagenet_file(num_layers: int) -> Path:
    """Where torchvision would cache its ImageNet file: <torch.hub.get_dir()>/checkpoints/<url name>."""
    weights = getattr(torchvision.models, _WEIGHTS[num_layers]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _resnet(num_layers: int, output_stride: int) -> nn.Module:
    """torchvision's ResNet, layer4 dilated (stride 1, dilation 2) for output stride 16."""
    builder = getattr(torchvision.models, _BUILDERS[num_layers])
    if output_stride == 32:
        return builder(weights=None)
    if num_layers >= 50:
        return builder(weights=None, replace_stride_with_dilation=[False, False, True])
    net = builder(weights=None)
    dilate_basic_layer(net.layer4)
    return net


def read_backbone_file(path: str | Path, num_layers: int) -> dict[str, torch.Tensor]:
    """A torchvision-resnet state dict from a file: either a plain state dict or a pseudo-label
    checkpoint (`{"backbone": ..., "backbone_layers": N}`, docs/contracts.md)."""
    path = Path(path)
    obj = load_file(path, "backbone file not found")
    if isinstance(obj, dict) and "backbone" in obj:
        if obj["backbone"] is None:
            raise SemdepthError(f"{path}: has no ResNet backbone (model {obj.get('model')!r}); "
                                f"use a deeplabv3_resnet* pseudo-label model or another pretrained choice")
        layers = obj.get("backbone_layers")
        if layers != num_layers:
            raise SemdepthError(f"{path}: backbone is ResNet-{layers} but the encoder is ResNet-{num_layers} "
                                f"(sde.encoder_layers must equal the pseudo-label backbone depth)")
        obj = obj["backbone"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SemdepthError(f"{path}: expected a state dict of tensors")
    return obj


class ResnetEncoder(nn.Module):
    """ResNet-18/34/50/101 trunk returning 5 feature maps at 1/2, 1/4, 1/8, 1/16, 1/32.

    `pretrained`: None (random init), "imagenet" (torchvision's file from torch's cache directory,
    never downloaded) or a path (state dict or pseudo-label checkpoint with a `backbone` entry).
    `in_channels` > 3 (the pose net's stacked pair) replaces conv1; such an encoder cannot load
    3-channel weights, which is why the pose net trains from scratch.
    `output_stride` 16 dilates layer4 (Hoyer et al.'s encoder): its features stay at 1/16, like
    layer3's, with the same parameters and key names, so the same ImageNet files load.
    `checkpointing` (`semdepth.models.checkpointing`) recomputes layer1..layer4 in the backward pass.
    """

    checkpointing: bool = False

    def __init__(self, num_layers: int = 18, pretrained: str | Path | None = None, in_channels: int = 3,
                 output_stride: int = 32) -> None:
        super().__init__()
        if num_layers not in _BUILDERS:
            raise SemdepthError(f"encoder: ResNet-{num_layers} is not supported (choose 18, 34, 50 or 101)")
        if output_stride not in OUTPUT_STRIDES:
            raise SemdepthError(f"encoder: output stride {output_stride} is not supported (16 or 32)")
        self.num_layers = num_layers
        self.output_stride = output_stride
        net = _resnet(num_layers, output_stride)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if num_layers >= 50 else 1
        self.num_ch_enc = [64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.register_buffer("_mean", torch.tensor(0.45), persistent=False)
        self.register_buffer("_std", torch.tensor(0.225), persistent=False)
        if pretrained is not None and str(pretrained).lower() not in ("", "none"):
            if str(pretrained) == "imagenet":
                f = imagenet_file(num_layers)
                if not f.is_file():
                    raise SemdepthError(f"ImageNet weights {f.name} not found in {f.parent} (nothing is downloaded; "
                                        f"copy torchvision's file there or use sde.pretrained: none|source|<path>)")
                self.load_backbone(read_backbone_file(f, num_layers), source=str(f))
            else:
                self.load_backbone(read_backbone_file(pretrained, num_layers), source=str(pretrained))

    def load_backbone(self, state_dict: Mapping[str, torch.Tensor], source: str = "backbone") -> None:
        """Load torchvision-resnet weights, checking every tensor: nothing may be silently skipped.

        Allowed differences: the classifier (`fc.*`, absent here) and BatchNorm `num_batches_tracked`
        counters (absent from torchvision's older ImageNet files).
        """
        own = self.state_dict()
        given = {k: v for k, v in state_dict.items() if not k.startswith(_IGNORED_PREFIXES)}
        problems = state_dict_problems(given, own)
        if problems:
            raise SemdepthError(f"{source}: not a ResNet-{self.num_layers} backbone; " + "; ".join(problems))
        with torch.no_grad():
            for k, t in own.items():
                if k in given:
                    t.copy_(given[k].to(t.dtype))

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under torchvision key names (the inverse of `load_backbone`)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [B,C,H,W] in [0,1] (H, W multiples of 32) -> 5 feature maps, finest first (the last two
        both at 1/16 with output stride 16)."""
        x = (x - self._mean) / self._std
        f0 = self.relu(self.bn1(self.conv1(x)))
        if self.checkpointing:
            from semdepth.models.checkpointing import run

            f1 = run(self.layer1, self.maxpool(f0))
            f2 = run(self.layer2, f1)
            f3 = run(self.layer3, f2)
            return [f0, f1, f2, f3, run(self.layer4, f3)]
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]
