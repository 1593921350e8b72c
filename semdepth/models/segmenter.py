"""The joint segmentation network of finetune (Hoyer et al. 2021, §3; docs/method.md §7).

- Shared `ResnetEncoder`.
- Segmentation decoder: the SDE's U-Net body (`UNetDecoder`, same architecture as the depth decoder,
  so the SDE decoder weights copy over one to one) with a new 19-class head at full resolution.
- Multi-task variant: a depth decoder and the pose net are kept, trained with the self-supervised
  depth loss, and the two decoders exchange features at 1/4 resolution (level 2) with PAD-Net-style
  gated attention in both directions: seg += A(depth), depth += A'(seg), A(x) = conv(x) ⊙ σ(conv_g(x)).
  The gate conv starts at zero, so each gate starts half open everywhere and learns where to open.
  A side head on the segmentation features *before* the exchange gets its own cross-entropy (the
  supervised loss is the mean of both), as in Hoyer's code.
- The pose net is the SDE's and stays frozen (no gradients, not in the optimiser), whatever `init`
  says for the segmentation network: Hoyer trains it at lr 1e-6, a thousandth of the encoder's, i.e.
  practically frozen, and its backward pass was a third of a multi-task CPU step. A random frozen pose
  net would make the depth loss meaningless, hence the SDE's even for `scratch`.

Initialisation (`init`): `sde` copies encoder, both decoder bodies, the depth heads and the pose net
from an SDE checkpoint (new segmentation heads); `scratch` is random; `source` loads the encoder
from the pseudo-label network's ResNet backbone; `imagenet` from torchvision's file in torch's cache
directory (never downloaded).

Architecture: the segmenter follows the SDE checkpoint's stored `architecture` ("unet" or "aspp",
semdepth/models/architecture.py) for every `init`, so there is no `finetune.architecture`: with `sde`
the copy is one to one, and `scratch`/`source`/`imagenet` train the same network from other weights,
which keeps the init ablation like for like (Hoyer's baselines also use the SDE decoder's layout).
The segmentation head is the project's 3x3 conv for both (Hoyer's is 1x1 64->64, 1x1 ->19).

Checkpoint (docs/contracts.md): {"format": "semdepth-seg-1", "config": FinetuneConfig dict,
"sde_config": ..., "state_dict": ..., "multitask": bool}; `sde_config["encoder_layers"]` rebuilds the
encoder, `sde_config["architecture"]` (absent = "unet") the bodies, and `min_depth`/`max_depth`
convert its disparity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from semdepth import SemdepthError
from semdepth.io import atomic_file
from semdepth.models.architecture import DEFAULT as DEFAULT_ARCHITECTURE
from semdepth.models.architecture import architecture_of, build_body, build_depth_decoder, build_encoder
from semdepth.models.depth_decoder import DepthDecoder, Head
from semdepth.models.encoder import read_backbone_file
from semdepth.models.pose import PoseNet
from semdepth.training import ddp

FORMAT = "semdepth-seg-1"
NUM_CLASSES = 19
EXCHANGE_LEVEL = 2  # decoder level i has resolution 1/2^i: level 2 = 1/4


class GatedExchange(nn.Module):
    """A(x) = conv3x3(x) ⊙ σ(conv3x3_g(x)); the gate conv is zero-initialised (σ = 0.5 everywhere)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.gate = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


class Segmenter(nn.Module):
    """forward(x in [0,1]) -> {"logits": [B,K,H,W], "encoder": feats} plus, in multi-task mode,
    "side_logits" [B,K,H/4,W/4] and "disp" {s: [B,1,H/2^s,W/2^s]} from the depth decoder."""

    def __init__(self, num_layers: int = 18, num_classes: int = NUM_CLASSES, multitask: bool = False,
                 pose_forward_init: float = 0.03, encoder_pretrained: str | Path | None = None,
                 architecture: str = DEFAULT_ARCHITECTURE) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.multitask = multitask
        self.architecture = architecture
        self.encoder = build_encoder(architecture, num_layers, encoder_pretrained)
        self.seg_decoder = build_body(architecture, self.encoder.num_ch_enc)
        # The depth decoder's head type (3x3 reflection-padded conv) with 19 outputs: a copy of the SDE
        # decoder with a new head. (Hoyer's 1x1 64->64->19 head suits his 64-channel last level; ours
        # has 16 channels, and a 64-channel full-resolution layer cost ~10% of a CPU step.)
        self.seg_head = Head(self.seg_decoder.num_ch_dec[0], num_classes)
        self.depth_decoder: DepthDecoder | None = None
        self.pose: PoseNet | None = None
        if multitask:
            ch = self.seg_decoder.num_ch_dec[EXCHANGE_LEVEL]
            self.depth_decoder = build_depth_decoder(architecture, self.encoder.num_ch_enc)
            self.depth_to_seg = GatedExchange(ch)
            self.seg_to_depth = GatedExchange(ch)
            self.side_head = nn.Conv2d(ch, num_classes, 1)
            self.pose = PoseNet(18, pose_forward_init)
            self.pose.requires_grad_(False)  # frozen: see the module docstring

    def train(self, mode: bool = True) -> "Segmenter":
        """Like nn.Module.train, but the frozen pose net stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self.pose is not None:
            self.pose.eval()
        return self

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Everything but the encoder and the pose net (the decoder learning-rate group)."""
        skip = {id(p) for p in self.encoder.parameters()}
        if self.pose is not None:
            skip |= {id(p) for p in self.pose.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def forward(self, x: torch.Tensor, with_depth: bool | None = None,
                pose_inputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
        """`with_depth=False` skips the depth heads and levels below the exchange (in multi-task mode
        the exchange still needs depth features down to level 2). `pose_inputs` (img_a, img_b) runs
        the pose net inside the same call, so DistributedDataParallel sees one forward per step;
        the result is out["pose"] = (axisangle, translation) of T_b_a."""
        feats = self.encoder(x)
        out: dict[str, Any] = {"encoder": feats}
        if pose_inputs is not None:
            if self.pose is None:
                raise ValueError("pose_inputs given but this segmenter has no pose net (multitask=False)")
            with torch.set_grad_enabled(torch.is_grad_enabled() and any(q.requires_grad for q in self.pose.parameters())):
                out["pose"] = self.pose(*pose_inputs)
        if not self.multitask:
            seg = self.seg_decoder.decode(feats)[0]
            out["logits"] = self.seg_head(seg)
            return out
        dd = self.depth_decoder
        assert dd is not None
        s, d = feats[-1], feats[-1]
        depth_levels: dict[int, torch.Tensor] = {}
        for i in range(4, -1, -1):
            s = self.seg_decoder.level(i, s, feats)
            if i >= EXCHANGE_LEVEL or with_depth is not False:
                d = dd.level(i, d, feats)
                depth_levels[i] = d
            if i == EXCHANGE_LEVEL:
                out["side_logits"] = self.side_head(s)
                s, d = s + self.depth_to_seg(d), d + self.seg_to_depth(s)
                depth_levels[i] = d
        out["logits"] = self.seg_head(s)
        if with_depth is not False:
            out["disp"] = {sc: torch.sigmoid(dd.heads[str(sc)](depth_levels[sc])) for sc in dd.scales}
            out["features"] = depth_levels
        return out


# ------------------------------------------------------------------------------------------------
# Initialisation
# ------------------------------------------------------------------------------------------------
def _copy_matching(dst: nn.Module, src: Mapping[str, torch.Tensor], prefix: str) -> tuple[int, int]:
    """Copy `src[prefix + k]` into dst's k where names and shapes agree; (copied, total in dst)."""
    own = dst.state_dict()
    copied = 0
    with torch.no_grad():
        for k, t in own.items():
            v = src.get(prefix + k)
            if v is not None and v.shape == t.shape:
                t.copy_(v.to(t.dtype))
                copied += 1
    return copied, len(own)


def init_from_sde(model: Segmenter, sde_ckpt: Mapping[str, Any], source: str = "SDE checkpoint") -> dict[str, str]:
    """Encoder, segmentation decoder body (copy of the depth decoder), depth decoder and pose net from
    an SDE checkpoint dict (`semdepth.models.sde.read_sde`). Returns what was transferred, for the log.

    Decoders of guided SDEs (PAC, SEEM) may hold extra or swapped layers; the U-Net layers that match
    by name and shape are copied and the count is reported, but the encoder must match completely.
    """
    depth = sde_ckpt["depth"]
    enc = {k[len("encoder."):]: v for k, v in depth.items() if k.startswith("encoder.")}
    model.encoder.load_backbone(enc, source=f"{source} encoder")
    report = {"encoder": "all"}
    n, total = _copy_matching(model.seg_decoder, depth, "decoder.")
    if n == 0:
        raise SemdepthError(f"{source}: no decoder weights fit the segmentation decoder")
    report["seg_decoder"] = f"{n}/{total}"
    if model.depth_decoder is not None:
        n, total = _copy_matching(model.depth_decoder, depth, "decoder.")
        report["depth_decoder"] = f"{n}/{total}"
    _load_pose(model, sde_ckpt, report)
    return report


def _load_pose(model: Segmenter, sde_ckpt: Mapping[str, Any] | None, report: dict[str, str]) -> None:
    """The SDE's (frozen) pose net for the multi-task depth loss, for every init."""
    if model.pose is None:
        return
    if sde_ckpt is None or not sde_ckpt.get("pose"):
        raise SemdepthError("finetune.multitask: the depth loss needs the SDE checkpoint's pose net")
    n, total = _copy_matching(model.pose, sde_ckpt["pose"], "")
    if n != total:
        raise SemdepthError(f"SDE checkpoint: its pose net does not fit ({n}/{total} tensors)")
    report["pose"] = "sde (frozen)"


def segmenter_architecture(sde_ckpt: Mapping[str, Any] | None, architecture: str | None = None) -> str:
    """The architecture a segmenter gets: the SDE checkpoint's stored one (see the module docstring);
    `architecture` only where there is no checkpoint, and it must agree with one that exists."""
    stored = architecture_of(sde_ckpt["config"]) if sde_ckpt is not None else None
    if stored is not None and architecture is not None and architecture != stored:
        raise SemdepthError(f"segmenter architecture {architecture!r} differs from the SDE checkpoint's "
                            f"{stored!r} (sde.architecture); rerun pretrain/retrain")
    return stored or architecture or DEFAULT_ARCHITECTURE


def build_segmenter(init: str, num_layers: int, multitask: bool, pose_forward_init: float = 0.03,
                    sde_ckpt: Mapping[str, Any] | None = None, source_path: str | Path | None = None,
                    num_classes: int = NUM_CLASSES, architecture: str | None = None
                    ) -> tuple[Segmenter, dict[str, str]]:
    """A freshly initialised segmenter for finetune.init; returns (model, transfer report). Its
    architecture is the SDE checkpoint's (`segmenter_architecture`), whatever the init."""
    if init not in ("imagenet", "scratch", "sde", "source"):
        raise SemdepthError(f"finetune.init: unknown value {init!r}")
    arch = segmenter_architecture(sde_ckpt, architecture)
    if init == "sde":
        if sde_ckpt is None:
            raise SemdepthError("finetune.init: sde needs the SDE checkpoint")
        model = Segmenter(num_layers, num_classes, multitask, pose_forward_init, architecture=arch)
        return model, init_from_sde(model, sde_ckpt)
    model = Segmenter(num_layers, num_classes, multitask, pose_forward_init,
                      encoder_pretrained="imagenet" if init == "imagenet" else None, architecture=arch)
    report = {"encoder": "imagenet" if init == "imagenet" else "random"}
    if init == "source":
        if source_path is None:
            raise SemdepthError("finetune.init: source needs data/models/pseudolabel.pt")
        model.encoder.load_backbone(read_backbone_file(source_path, num_layers), source=str(source_path))
        report["encoder"] = f"source backbone ({source_path})"
    _load_pose(model, sde_ckpt, report)
    return model, report


# ------------------------------------------------------------------------------------------------
# Checkpoint
# ------------------------------------------------------------------------------------------------
def save_segmenter(path: str | Path, model: nn.Module, config: dict, sde_config: dict,
                   meta: dict | None = None) -> None:
    """Atomically write `data/models/segmenter.pt` (the pose net is kept: it is part of the state)."""
    m = ddp.unwrap(model)
    state = {"format": FORMAT, "config": dict(config), "sde_config": dict(sde_config),
             "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
             "multitask": bool(m.multitask), "num_classes": int(m.num_classes), "meta": dict(meta or {})}
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_segmenter(path: str | Path, device: torch.device | str = "cpu") -> tuple[Segmenter, dict]:
    """(model in eval mode, checkpoint dict without the weights)."""
    from semdepth.models.checkpoint import load_format

    path = Path(path)
    ck = load_format(path, FORMAT, "segmenter checkpoint not found (run finetune first)")
    sde_cfg = ck["sde_config"]
    model = Segmenter(int(sde_cfg["encoder_layers"]), int(ck.get("num_classes", NUM_CLASSES)), bool(ck["multitask"]),
                      float(sde_cfg.get("pose_forward_init", 0.0)), architecture=architecture_of(sde_cfg))
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise SemdepthError(f"{path}: weights do not fit the stored config ({str(e).splitlines()[0]})") from None
    info = {k: v for k, v in ck.items() if k != "state_dict"}
    return model.to(device).eval(), info
