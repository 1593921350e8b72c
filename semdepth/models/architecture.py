"""Which encoder and decoder bodies `sde.architecture` names: "unet" (default) or "aspp".

| | `unet` (default, monodepth2) | `aspp` (Hoyer et al. 2021) |
|---|---|---|
| encoder | ResNet-`sde.encoder_layers`, output stride 32 | the same ResNet, layer4 dilated: output stride 16 |
| deepest level | 3x3 conv + ELU | ASPP: 1x1, dilations 6/12/18, image pooling; 256 ch., projection, dropout 0.5 |
| decoder widths (levels 0..4) | 16, 32, 64, 128, 256 | 64, 128, 128, 256, 256 |
| other levels | 3x3 conv + ELU, nearest x2, skips | the same |
| disparity heads | sigmoid at 1/1, 1/2, 1/4, 1/8 | the same |

Every network that shares this body builds it here: the SDE depth decoder, the segmenter's
segmentation and depth decoders. That is what keeps `finetune.init: sde` a one-to-one copy of the SDE
decoder into the segmentation decoder for either architecture.

Where the architecture is stored: in the SDE checkpoint's config (`SdeConfig.architecture`), from which
`load_sde` rebuilds the network, and, through the segmenter checkpoint's `sde_config`, for the
segmenter. Checkpoints written before the key existed have no entry and are "unet".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from semdepth import SemdepthError
from semdepth.models.depth_decoder import DECODER_CHANNELS, DepthDecoder, UNetDecoder
from semdepth.models.encoder import ResnetEncoder

DEFAULT = "unet"
ASPP_DECODER_CHANNELS = (64, 128, 128, 256, 256)


@dataclass(frozen=True)
class Architecture:
    name: str
    output_stride: int  # of the encoder: 32, or 16 with layer4 dilated
    decoder_channels: tuple[int, ...]  # U-Net widths of levels 0..4
    aspp: bool  # the deepest level's first conv is the ASPP bottleneck


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture("unet", 32, tuple(DECODER_CHANNELS), False),
    "aspp": Architecture("aspp", 16, ASPP_DECODER_CHANNELS, True),
}


def spec(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise SemdepthError(f"sde.architecture: {name!r} is not one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def architecture_of(cfg: Any) -> str:
    """The architecture an SdeConfig (object or the dict a checkpoint stores) names; "unet" for a
    stored config from before the key existed."""
    if isinstance(cfg, Mapping):
        return str(cfg.get("architecture", DEFAULT))
    return str(cfg.architecture)


def build_encoder(name: str, num_layers: int, pretrained: str | Path | None = None) -> ResnetEncoder:
    return ResnetEncoder(num_layers, pretrained, output_stride=spec(name).output_stride)


def build_body(name: str, num_ch_enc: Sequence[int]) -> UNetDecoder:
    """The decoder body without heads (the segmentation decoder)."""
    a = spec(name)
    return UNetDecoder(num_ch_enc, a.decoder_channels, aspp=a.aspp)


def build_depth_decoder(name: str, num_ch_enc: Sequence[int]) -> DepthDecoder:
    """The body with sigmoid disparity heads at scales 0..3."""
    a = spec(name)
    return DepthDecoder(num_ch_enc, num_ch_dec=a.decoder_channels, aspp=a.aspp)
