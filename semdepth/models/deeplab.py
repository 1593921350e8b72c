"""DeepLabV3 pseudo-label networks built from torchvision, and their weights.

Why torchvision's own building blocks: the state dict then uses torchvision's key names, so
torchvision's COCO files load unchanged, and the ResNet variants' backbone has exactly the keys of a
torchvision ResNet (`conv1.weight`, `layer1.0.conv1.weight`, ...). That backbone, trained on the
labelled source domain, is the offline stand-in for ImageNet initialisation of the SDE encoder and the
finetune network (docs/method.md §3.8): `backbone_state_dict` extracts it for `ResnetEncoder.load_backbone`.

ResNet-18/34 use BasicBlocks, for which torchvision refuses `replace_stride_with_dilation`; we dilate
layer4 by hand (stride 1, dilation 2) for output stride 16 and use the DeepLabV3 paper's ASPP rates
for that stride (6, 12, 18). Dilation changes no parameter shape. ResNet-50/101 and MobileNetV3 are
torchvision's constructors unchanged (output stride 8 and 16). `output_stride` (pseudolabel.output_stride)
overrides the ResNets' stride: 8 dilates layer3 too (layer4 by 4, ASPP rates 12/24/36), 16 on ResNet-50/101
dilates only layer4 (rates 6/12/18). Why offer it: small classes (poles, signs, people) are one or two
feature cells wide at stride 16 on a 64x128 frame; stride 8 costs about 2-3x the compute of layer3+.

Nothing is ever downloaded: networks are built with `weights=None, weights_backbone=None`, and the
COCO weights are read only from torch's cache directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import deeplabv3 as tv_deeplab

from semdepth import SemdepthError
from semdepth.models.checkpoint import load_file, state_dict_problems

MODELS = ("deeplabv3_resnet18", "deeplabv3_resnet34", "deeplabv3_resnet50", "deeplabv3_resnet101",
          "deeplabv3_mobilenet_v3_large")
#: ResNet depth of each model's backbone (None: not a ResNet, nothing to transfer to the SDE encoder).
BACKBONE_LAYERS: dict[str, int | None] = {"deeplabv3_resnet18": 18, "deeplabv3_resnet34": 34,
                                          "deeplabv3_resnet50": 50, "deeplabv3_resnet101": 101,
                                          "deeplabv3_mobilenet_v3_large": None}
#: torchvision weight enums that have COCO-with-VOC-labels files.
_COCO_ENUMS = {"deeplabv3_resnet50": "DeepLabV3_ResNet50_Weights",
               "deeplabv3_resnet101": "DeepLabV3_ResNet101_Weights",
               "deeplabv3_mobilenet_v3_large": "DeepLabV3_MobileNet_V3_Large_Weights"}
NUM_TRAIN_CLASSES = 19
NUM_VOC_CLASSES = 21  # background + 20 VOC classes (torchvision's COCO_WITH_VOC_LABELS)
# ImageNet statistics: what torchvision's COCO weights were trained with; close to the SDE encoder's
# (x - 0.45) / 0.225, so a transferred backbone sees nearly the same input distribution.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def dilate_basic_layer(layer: nn.Sequential, dilation: int = 2, first: int = 1) -> None:
    """Turn a strided BasicBlock layer into a dilated one (same parameters, output stride halved less).

    Mirrors torchvision's `_make_layer(dilate=True)`, which refuses BasicBlocks: the first block keeps
    the previous layer's dilation `first` in its first conv but loses the stride (also in the 1x1
    downsample); every later 3x3 conv gets `dilation`. Bottleneck ResNets use torchvision's
    `replace_stride_with_dilation` instead.
    """
    for bi, block in enumerate(layer):
        for ci, conv in enumerate((block.conv1, block.conv2)):
            d = first if (bi == 0 and ci == 0) else dilation
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


#: ASPP rates for each output stride (the DeepLabV3 paper's: doubled when the stride halves).
_ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
#: each model's output stride when pseudolabel.output_stride is 0 (torchvision's, and ours for 18/34).
DEFAULT_OUTPUT_STRIDE = {"deeplabv3_resnet18": 16, "deeplabv3_resnet34": 16, "deeplabv3_resnet50": 8,
                         "deeplabv3_resnet101": 8, "deeplabv3_mobilenet_v3_large": 16}


def _deeplab_small_resnet(layers: int, num_classes: int, output_stride: int = 16) -> tv_deeplab.DeepLabV3:
    net = getattr(torchvision.models, f"resnet{layers}")(weights=None)
    if output_stride == 8:
        dilate_basic_layer(net.layer3, 2)
        dilate_basic_layer(net.layer4, 4, first=2)
    else:
        dilate_basic_layer(net.layer4)
    backbone = IntermediateLayerGetter(net, return_layers={"layer4": "out"})
    head = tv_deeplab.DeepLabHead(512, num_classes, atrous_rates=_ASPP_RATES[output_stride])
    return tv_deeplab.DeepLabV3(backbone, head, None)


def _deeplab_big_resnet_os16(layers: int, num_classes: int) -> tv_deeplab.DeepLabV3:
    """ResNet-50/101 DeepLabV3 at output stride 16: torchvision's layout with only layer4 dilated."""
    net = getattr(torchvision.models, f"resnet{layers}")(weights=None,
                                                          replace_stride_with_dilation=[False, False, True])
    backbone = IntermediateLayerGetter(net, return_layers={"layer4": "out"})
    head = tv_deeplab.DeepLabHead(2048, num_classes, atrous_rates=_ASPP_RATES[16])
    return tv_deeplab.DeepLabV3(backbone, head, None)


def resolve_output_stride(name: str, output_stride: int = 0) -> int:
    """The output stride `name` is built with (0 = its default); one-line error if it cannot have it."""
    if name not in MODELS:
        raise SemdepthError(f"pseudolabel.model: {name!r} is not one of {', '.join(MODELS)}")
    os_ = output_stride or DEFAULT_OUTPUT_STRIDE[name]
    if os_ not in _ASPP_RATES:
        raise SemdepthError(f"pseudolabel.output_stride: {output_stride} is not 0, 8 or 16")
    if BACKBONE_LAYERS[name] is None and os_ != DEFAULT_OUTPUT_STRIDE[name]:
        raise SemdepthError(f"pseudolabel.output_stride: {name} has output stride "
                            f"{DEFAULT_OUTPUT_STRIDE[name]} only; set 0 or {DEFAULT_OUTPUT_STRIDE[name]}")
    return os_


def build_torchvision_deeplab(name: str, num_classes: int = NUM_TRAIN_CLASSES,
                              output_stride: int = 0) -> tv_deeplab.DeepLabV3:
    """The bare torchvision DeepLabV3 (randomly initialised, no auxiliary head)."""
    os_ = resolve_output_stride(name, output_stride)
    layers = BACKBONE_LAYERS[name]
    if layers in (18, 34):
        return _deeplab_small_resnet(layers, num_classes, os_)
    if layers is not None and os_ == 16:
        return _deeplab_big_resnet_os16(layers, num_classes)
    builder = getattr(torchvision.models.segmentation, name)
    return builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


class DeepLab(nn.Module):
    """DeepLabV3 taking images in [0, 1] (normalised inside, as every network here) -> logits.

    `num_classes` 19 = Cityscapes train ids; 21 = VOC classes (COCO weights), used only as a binary
    foreground map (argmax > 0). `state_dict()` of `.net` is torchvision's format.
    """

    def __init__(self, name: str, num_classes: int = NUM_TRAIN_CLASSES, output_stride: int = 0) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.output_stride = resolve_output_stride(name, output_stride)
        self.net = build_torchvision_deeplab(name, num_classes, output_stride)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def backbone_layers(self) -> int | None:
        return BACKBONE_LAYERS[self.name]

    @property
    def voc(self) -> bool:
        return self.num_classes == NUM_VOC_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,3,H,W] RGB in [0,1] -> logits [B,num_classes,H,W]."""
        return self.net((x - self.mean) / self.std)["out"]


# ---------------------------------------------------------------------------------------------
# Backbone transfer
# ---------------------------------------------------------------------------------------------
def backbone_state_dict(model: DeepLab) -> dict[str, torch.Tensor] | None:
    """The ResNet backbone under torchvision-resnet key names (`conv1.weight`, `bn1.running_mean`,
    `layer4.1.conv2.weight`, ...; no `fc.*`), or None for the MobileNet model."""
    if model.backbone_layers is None:
        return None
    return {k: v.detach().cpu().clone() for k, v in model.net.backbone.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
def coco_weights_file(name: str) -> Path:
    """Where torchvision caches the COCO-with-VOC-labels file of `name` (url basename in
    `<torch.hub.get_dir()>/checkpoints/`)."""
    if name not in _COCO_ENUMS:
        raise SemdepthError(f"pseudolabel.weights: torchvision has no COCO weights for {name} (only for "
                            f"{', '.join(_COCO_ENUMS)}); choose one of those or pseudolabel.weights: train")
    enum = getattr(torchvision.models.segmentation, _COCO_ENUMS[name])
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.COCO_WITH_VOC_LABELS_V1.url).name


def _check_and_load(model: DeepLab, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load that names what does not fit (the auxiliary FCN head, if present, is dropped)."""
    given = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    problems = state_dict_problems(given, model.net.state_dict(), show=2)
    if problems:
        raise SemdepthError(f"{source}: not a {model.name} state dict with {model.num_classes} classes; "
                            + "; ".join(problems))
    model.net.load_state_dict(given, strict=True)


def _torch_load(path: Path) -> object:
    return load_file(path)


def load_coco(name: str, output_stride: int = 0) -> DeepLab:
    """torchvision's COCO-with-VOC-labels DeepLabV3 from torch's cache (21 classes), never downloaded."""
    f = coco_weights_file(name)
    if not f.is_file():
        raise SemdepthError(f"pseudolabel.weights: torchvision-coco needs {f.name} in {f.parent} "
                            f"(nothing is downloaded; copy the file there or use pseudolabel.weights: train)")
    model = DeepLab(name, NUM_VOC_CLASSES, output_stride)
    _check_and_load(model, _state_of(_torch_load(f), f), str(f))
    return model


def _state_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SemdepthError(f"{path}: expected a state dict of tensors or a {{'state_dict': ...}} checkpoint")
    return obj  # type: ignore[return-value]


def load_checkpoint(path: str | Path, name: str, output_stride: int = 0) -> DeepLab:
    """A local DeepLabV3 checkpoint for model `name`: a bare torchvision state dict or our
    `data/models/pseudolabel.pt` format. 19 classes = train ids; 21 = VOC (binary only). The output
    stride changes no parameter shape, so any checkpoint of `name` loads at any stride it supports."""
    path = Path(path)
    obj = _torch_load(path)
    if isinstance(obj, dict) and "model" in obj and obj["model"] != name:
        raise SemdepthError(f"{path}: checkpoint is a {obj['model']} but pseudolabel.model is {name}")
    state = _state_of(obj, path)
    head = state.get("classifier.4.weight")  # DeepLabHead's last 1x1 conv: [num_classes, 256, 1, 1]
    if head is None:
        raise SemdepthError(f"{path}: not a DeepLabV3 state dict (no classifier.4.weight)")
    n = int(head.shape[0])
    if n not in (NUM_TRAIN_CLASSES, NUM_VOC_CLASSES):
        raise SemdepthError(f"{path}: has {n} output classes; expected {NUM_TRAIN_CLASSES} "
                            f"(Cityscapes train ids) or {NUM_VOC_CLASSES} (VOC, binary foreground only)")
    model = DeepLab(name, n, output_stride)
    _check_and_load(model, state, str(path))
    return model


def checkpoint_dict(model: DeepLab) -> dict:
    """`data/models/pseudolabel.pt` content (docs/contracts.md)."""
    return {"model": model.name, "num_classes": model.num_classes,
            "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
            "backbone": backbone_state_dict(model), "backbone_layers": model.backbone_layers}
