"""Pixel-adaptive convolution (Su et al. CVPR'19) as used by Guizilini et al. (ICLR'20) for depth.

    v'_i = sum_j K(f_i, f_j) · W[p_i - p_j] · v_j + b,   K = exp(-||f_i - f_j||² / (2σ²))

The kernel K is shared by all input channels and computed from a separate guidance feature map f
(here: features of the frozen pseudo-label network), so the filter stops smoothing across semantic
boundaries while keeping translation-equivariant weights W. σ is learnable per layer and
parametrised by its logarithm so it stays positive. With K ≡ 1 (a constant guide) the result is the
plain convolution with the same W and b; `PacConv2d` can therefore *borrow* the weights of an
existing `nn.Conv2d` (`from_conv`), and the only new parameter is σ.

Two implementations (benchmarks/guidance.py compares them with the plain convolution):
- "shift" (default): first apply all k² taps of W as one 1x1 convolution, z = [W_o · x_pad]_o with
  k²·Cout channels, then out_i = Σ_o K_o,i · z_o,(i+o) + b over the k² shifted views of z. Same
  FLOPs as the convolution, and it keeps k²·Cout values per pixel instead of unfold's k²·Cin (the
  decoder's convs after a skip have Cin = 1.5-3 × Cout), with no patch copy.
- "unfold": the textbook version; patches [B, Cin·k², HW] scaled by K and contracted with W.
The guide distances are computed from shifted slices of the padded guide (views), so the guide is
never unfolded either.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from semdepth import SemdepthError
from semdepth.models.depth_decoder import DepthDecoder
from semdepth.models.depth_net import DepthNet
from semdepth.models.encoder import ResnetEncoder

_GUIDE_PAD = {"reflect": "reflect", "replicate": "replicate", "zeros": "replicate", "circular": "circular"}


def pac_kernel(guide: torch.Tensor, kernel_size: tuple[int, int], sigma: torch.Tensor,
               padding_mode: str = "reflect") -> torch.Tensor:
    """Gaussian adaptive kernel [B, k², H·W] (row-major over the k×k window) from guide [B,C,H,W].

    The guide is padded the same way as the input (replicate for zero padding: a zero-padded input
    contributes nothing there anyway), so border pixels compare against the values the convolution
    actually sees.
    """
    kh, kw = kernel_size
    ph, pw = kh // 2, kw // 2
    B, _, H, W = guide.shape
    gp = F.pad(guide, (pw, pw, ph, ph), mode=_GUIDE_PAD[padding_mode]) if (ph or pw) else guide
    d2 = []
    for dy in range(kh):
        for dx in range(kw):
            d2.append((gp[:, :, dy:dy + H, dx:dx + W] - guide).pow(2).sum(1))  # [B,H,W]
    dist = torch.stack(d2, 1).flatten(2)  # [B, k², HW]
    return torch.exp(-dist / (2.0 * sigma * sigma))


def _pad(x: torch.Tensor, ph: int, pw: int, padding_mode: str) -> torch.Tensor:
    if not (ph or pw):
        return x
    return F.pad(x, (pw, pw, ph, ph), mode="constant" if padding_mode == "zeros" else padding_mode)


def _pac_unfold(x: torch.Tensor, kernel: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding_mode: str) -> torch.Tensor:
    B, Cin, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    cols = F.unfold(_pad(x, kh // 2, kw // 2, padding_mode), (kh, kw)).view(B, Cin, kh * kw, H * W)
    cols = (cols * kernel.unsqueeze(1)).view(B, Cin * kh * kw, H * W)
    out = torch.matmul(weight.view(Cout, -1), cols)  # [B, Cout, HW]
    if bias is not None:
        out = out + bias.view(1, Cout, 1)
    return out.view(B, Cout, H, W)


def _pac_shift(x: torch.Tensor, kernel: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               padding_mode: str) -> torch.Tensor:
    B, Cin, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    taps = weight.permute(2, 3, 0, 1).reshape(kh * kw * Cout, Cin, 1, 1)  # tap-major: o = dy·kw + dx
    z = F.conv2d(_pad(x, kh // 2, kw // 2, padding_mode), taps)  # [B, k²·Cout, H+2ph, W+2pw]
    k = kernel.view(B, kh * kw, 1, H, W)
    out = None
    for dy in range(kh):
        for dx in range(kw):
            o = dy * kw + dx
            term = z[:, o * Cout:(o + 1) * Cout, dy:dy + H, dx:dx + W] * k[:, o]
            out = term if out is None else out + term
    if bias is not None:
        out = out + bias.view(1, Cout, 1, 1)
    return out


_IMPLS = {"shift": _pac_shift, "unfold": _pac_unfold}


def pac2d(x: torch.Tensor, guide: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
          sigma: torch.Tensor, padding_mode: str = "reflect", kernel: torch.Tensor | None = None,
          impl: str = "shift") -> torch.Tensor:
    """Functional PAC, stride 1, 'same' output size, odd kernel. Pass `kernel` to skip the guide."""
    kh, kw = weight.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"pac2d needs an odd kernel size, got {kh}x{kw}")
    if impl not in _IMPLS:
        raise ValueError(f"pac2d: impl {impl!r} is not one of {', '.join(_IMPLS)}")
    if kernel is None:
        if guide is None:
            raise ValueError("pac2d needs either a guide or a precomputed kernel")
        if guide.shape[-2:] != x.shape[-2:] or guide.shape[0] != x.shape[0]:
            raise ValueError(f"pac2d: guide {tuple(guide.shape)} does not match input {tuple(x.shape)}")
        kernel = pac_kernel(guide, (kh, kw), sigma, padding_mode)
    return _IMPLS[impl](x, kernel, weight, bias, padding_mode)


class PacConv2d(nn.Module):
    """3x3 (any odd k) pixel-adaptive convolution with a learnable log-σ.

    `sigma_init` defaults to sqrt(guide channels): for unit-variance guide features the squared
    distance between unrelated pixels is about 2·C, so K starts around e^-1 there and near 1 inside
    smooth regions, i.e. the layer starts close to the plain convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 padding_mode: str = "reflect", guide_channels: int | None = None,
                 sigma_init: float | None = None, impl: str = "shift") -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"PacConv2d needs an odd kernel size, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.padding_mode = padding_mode
        self.impl = impl
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias)  # torch's default init
        self.weight = conv.weight
        self.bias = conv.bias
        if sigma_init is None:
            sigma_init = math.sqrt(guide_channels) if guide_channels else 1.0
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init)))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, padding_mode: str = "reflect", guide_channels: int | None = None,
                  sigma_init: float | None = None, impl: str = "shift") -> "PacConv2d":
        """A PAC layer sharing (not copying) `conv`'s weight and bias Parameters."""
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("PacConv2d.from_conv supports stride 1, dilation 1, groups 1 only")
        k = conv.kernel_size[0]
        pac = cls(conv.in_channels, conv.out_channels, k, conv.bias is not None, padding_mode,
                  guide_channels, sigma_init, impl)
        pac.weight = conv.weight
        pac.bias = conv.bias
        return pac

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return pac2d(x, guide, self.weight, self.bias, self.sigma, self.padding_mode, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding_mode={self.padding_mode}, impl={self.impl}")


# ---------------------------------------------------------------------------------------------
# Guidance features from the frozen pseudo-label DeepLab and the PAC depth network
# ---------------------------------------------------------------------------------------------
GUIDE_CHANNELS = 16
#: decoder level -> DeepLab feature guiding it: the class logits for the full-resolution level, the
#: last backbone output at each stride 2/4/8 for levels 1-3, the ASPP head's features for level 4.
LEVEL_SOURCES = {0: "logits", 1: "s2", 2: "s4", 3: "s8", 4: "head"}


class SemanticFeatures(nn.Module):
    """The frozen pseudo-label DeepLabV3 returning multi-level features (any torchvision backbone).

    The backbone is an `IntermediateLayerGetter` (a ModuleDict run in order); we keep the last output
    at each stride, then the ASPP head's penultimate features and the class logits. BatchNorm stays
    in eval mode and nothing here ever gets a gradient: "only the depth network trains".
    """

    def __init__(self, deeplab: nn.Module) -> None:
        super().__init__()
        self.deeplab = deeplab
        for p in self.deeplab.parameters():
            p.requires_grad_(False)
        self.deeplab.eval()
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, 64, 64))
        self.channels = {k: int(v.shape[1]) for k, v in probe.items()}

    def train(self, mode: bool = True) -> "SemanticFeatures":
        super().train(mode)
        self.deeplab.eval()  # frozen: BatchNorm statistics must not move
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.deeplab.net
        h = (x - self.deeplab.mean) / self.deeplab.std
        out: dict[str, torch.Tensor] = {}
        for module in net.backbone.values():
            h = module(h)
            stride = x.shape[-1] // h.shape[-1]
            if stride in (2, 4, 8):
                out[f"s{stride}"] = h
        layers = list(net.classifier)  # DeepLabHead: ASPP, 3x3 conv, BN, ReLU | 1x1 conv to classes
        for layer in layers[:-1]:
            h = layer(h)
        out["head"] = h
        out["logits"] = layers[-1](h)
        return out


def _adapter(cin: int, cout: int = GUIDE_CHANNELS) -> nn.Sequential:
    """Guizilini et al.: 3x3 conv, 1x1 conv, GroupNorm, ELU on each semantic level."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 1),
                         nn.GroupNorm(4, cout), nn.ELU(inplace=True))


class SemanticGuide(nn.Module):
    """Frozen DeepLab + trainable adapters -> one guide map [B, 16, H/2^i, W/2^i] per decoder level.

    The DeepLab weights live in this module's state dict (so a saved PAC SDE is self-contained), and
    the buffers `arch`/`num_classes` say which DeepLab to rebuild when a checkpoint is loaded without
    the pseudo-label file (`load_sde` builds first and loads after: see `_rebuild_on_load`).
    """

    def __init__(self, model_name: str | None = None, num_classes: int = 19,
                 deeplab: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer("arch", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("num_classes", torch.tensor(int(num_classes), dtype=torch.long))
        self.semantic: SemanticFeatures | None = None
        self.adapters = nn.ModuleDict()
        if deeplab is not None:
            self._build(deeplab)
        elif model_name is not None:
            from semdepth.models.deeplab import DeepLab

            self._build(DeepLab(model_name, num_classes))
        self.register_load_state_dict_pre_hook(SemanticGuide._rebuild_on_load)

    def _build(self, deeplab: nn.Module) -> None:
        from semdepth.models.deeplab import MODELS

        self.arch.fill_(MODELS.index(deeplab.name))
        self.num_classes.fill_(int(deeplab.num_classes))
        self.semantic = SemanticFeatures(deeplab)
        self.adapters = nn.ModuleDict({str(lvl): _adapter(self.semantic.channels[src])
                                       for lvl, src in LEVEL_SOURCES.items()})

    def _rebuild_on_load(self, state_dict, prefix, *args) -> None:
        from semdepth.models.deeplab import MODELS, DeepLab

        arch = state_dict.get(prefix + "arch")
        ncls = state_dict.get(prefix + "num_classes")
        if arch is None or ncls is None or int(arch) < 0:
            return  # let the strict load report what is missing
        if self.semantic is None or int(arch) != int(self.arch) or int(ncls) != int(self.num_classes):
            device = self.arch.device
            self._build(DeepLab(MODELS[int(arch)], int(ncls)).to(device))
            self.adapters.to(device)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.semantic is None:
            raise RuntimeError("SemanticGuide has no DeepLab: build it from the pseudo-label model or load "
                               "a PAC SDE checkpoint first")
        sem = self.semantic(x)
        H, W = x.shape[-2:]
        guides: dict[int, torch.Tensor] = {}
        for lvl, src in LEVEL_SOURCES.items():
            g = self.adapters[str(lvl)](sem[src])
            size = (H >> lvl, W >> lvl)
            if tuple(g.shape[-2:]) != size:
                g = F.interpolate(g, size=size, mode="bilinear", align_corners=False)
            guides[lvl] = g
        return guides


class PacConvBlock(nn.Module):
    """Drop-in for the decoder's `upconv_{i}_1` ConvBlock: PAC with the block's own conv weights, ELU.

    The decoder calls blocks with one tensor, so the guide travels concatenated behind the features
    (the `pre_fuse` hook appends it) and is split off here. Keeping the original `conv` keeps the
    plain network's key names; the only new parameter is `log_sigma`.
    """

    def __init__(self, conv: nn.Conv2d, guide_channels: int = GUIDE_CHANNELS, impl: str = "shift") -> None:
        super().__init__()
        self.conv = conv
        self.log_sigma = nn.Parameter(torch.tensor(0.5 * math.log(guide_channels)))
        self.act = nn.ELU(inplace=True)
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = self.conv.in_channels
        feat, guide = x[:, :cin], x[:, cin:]
        return self.act(pac2d(feat, guide, self.conv.weight, self.conv.bias, self.log_sigma.exp(), "reflect",
                              impl=self.impl))


class PacDepthNet(DepthNet):
    """Depth network whose decoder convs after each skip (`upconv_{i}_1`, all 5 levels) are PAC
    layers guided by the frozen pseudo-label network; the encoder and the rest are unchanged."""

    def __init__(self, encoder: ResnetEncoder, decoder: DepthDecoder, guide: SemanticGuide,
                 impl: str = "shift") -> None:
        super().__init__(encoder, decoder)
        for i in range(5):
            key = f"upconv_{i}_1"
            decoder.convs[key] = PacConvBlock(decoder.convs[key].conv, GUIDE_CHANNELS, impl)
        self.guide = guide

    def forward(self, x: torch.Tensor, batch: Mapping[str, Any] | None = None) -> dict:
        feats = self.encoder(x)
        guides = self.guide(x)
        out = self.decoder(feats, pre_fuse=lambda i, t: torch.cat([t, guides[i]], 1))
        out["encoder"] = feats
        return out


def load_pseudolabel_deeplab(path: str | Path) -> nn.Module:
    """The DeepLab stored in data/models/pseudolabel.pt (docs/contracts.md), in eval mode."""
    from semdepth.models.deeplab import load_checkpoint

    from semdepth.models.checkpoint import load_file

    path = Path(path)
    obj = load_file(path, "pseudo-label model not found (sde.guidance pac needs the pseudolabel stage)")
    if not isinstance(obj, dict) or "model" not in obj:
        raise SemdepthError(f"{path}: not a pseudo-label checkpoint (no 'model' entry)")
    return load_checkpoint(path, obj["model"]).eval()
