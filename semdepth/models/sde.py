"""The self-supervised depth estimator (SDE): depth network, factory, checkpoint format.

Checkpoint (docs/contracts.md): {"format": "semdepth-sde-1", "config": SdeConfig as dict,
"depth": state_dict, "pose": state_dict, "meta": {...}}, loaded with weights_only=True. The config
stored in the file is what rebuilds the architecture, so later stages never need the params that
trained it.

Guidance hook: `build_depth_net` builds the plain monodepth2 network for guidance "none"; any other
value is delegated to `semdepth.models.guidance.build_guided_depth_net(config, encoder, **kwargs)`,
which must return a `DepthNet` subclass (it may override `forward` to use extra batch inputs and
`aux_losses` to add its loss terms; `needs` names the extra batch keys it reads, e.g. "foreground").
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from semdepth import SemdepthError
from semdepth.io import atomic_file
from semdepth.models.depth_decoder import DepthDecoder
from semdepth.models.encoder import ResnetEncoder
from semdepth.models.pose import PoseNet

FORMAT = "semdepth-sde-1"


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output -> (scaled disparity, depth) with depth in [min_depth, max_depth] (monodepth2)."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


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


def _get(cfg: Any, key: str) -> Any:
    return cfg[key] if isinstance(cfg, Mapping) else getattr(cfg, key)


def build_depth_net(cfg: Any, pretrained: str | Path | None = None, **kwargs: Any) -> DepthNet:
    """The depth network an SdeConfig (object or dict) describes; `pretrained` only for the encoder.
    `kwargs` go to the guidance builder (e.g. training=True, pseudolabel_model=path); ignored for "none"."""
    encoder = ResnetEncoder(int(_get(cfg, "encoder_layers")), pretrained)
    guidance = _get(cfg, "guidance")
    if guidance == "none":
        return DepthNet(encoder, DepthDecoder(encoder.num_ch_enc))
    try:
        mod = importlib.import_module("semdepth.models.guidance")
    except ModuleNotFoundError as e:
        if e.name == "semdepth.models.guidance":
            raise SemdepthError(f"sde.guidance: {guidance!r} is not built yet (semdepth/models/guidance.py)") from None
        raise
    return mod.build_guided_depth_net(cfg, encoder, **kwargs)


def build_pose_net(cfg: Any) -> PoseNet:
    return PoseNet(18, float(_get(cfg, "pose_forward_init")))


def save_sde(path: str | Path, depth_net: nn.Module, pose_net: nn.Module, config: dict, meta: dict) -> None:
    """Atomically write the checkpoint (modules may be DDP-wrapped)."""
    unwrap = lambda m: m.module if hasattr(m, "module") else m  # noqa: E731
    net = unwrap(depth_net)
    depth_state = net.inference_state_dict() if hasattr(net, "inference_state_dict") else net.state_dict()
    state = {"format": FORMAT, "config": dict(config),
             "depth": {k: v.detach().cpu() for k, v in depth_state.items()},
             "pose": {k: v.detach().cpu() for k, v in unwrap(pose_net).state_dict().items()},
             "meta": dict(meta)}
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def read_sde(path: str | Path) -> dict:
    """The raw checkpoint dict, validated."""
    from semdepth.models.checkpoint import load_format

    return load_format(path, FORMAT, "SDE checkpoint not found (run pretrain/retrain first)")


def load_sde(path: str | Path, device: torch.device | str = "cpu", **kwargs: Any) -> tuple[DepthNet, PoseNet, dict]:
    """(depth_net, pose_net, config dict) in eval mode on `device`."""
    ck = read_sde(path)
    cfg = ck["config"]
    depth = build_depth_net(cfg, None, **kwargs)
    pose = build_pose_net(cfg)
    try:
        depth.load_state_dict(ck["depth"])
        pose.load_state_dict(ck["pose"])
    except RuntimeError as e:
        raise SemdepthError(f"{path}: weights do not fit the stored config ({str(e).splitlines()[0]})") from None
    return depth.to(device).eval(), pose.to(device).eval(), cfg
