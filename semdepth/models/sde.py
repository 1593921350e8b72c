"""The self-supervised depth estimator (SDE): network factory and checkpoint format.

Checkpoint (docs/contracts.md): {"format": "semdepth-sde-1", "config": SdeConfig as dict,
"depth": state_dict, "pose": state_dict, "meta": {...}}, loaded with weights_only=True. The config
stored in the file is what rebuilds the architecture, so later stages never need the params that
trained it.

`build_depth_net` builds the network `sde.guidance` names from `semdepth.models.registry`: "none" is
the plain monodepth2 `DepthNet` (semdepth/models/depth_net.py), the others are the guided subclasses
the guidance package registers (semdepth/models/guidance/).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import semdepth.models.guidance  # noqa: F401  registers the guided depth networks
from semdepth import SemdepthError
from semdepth.io import atomic_file
from semdepth.models.architecture import architecture_of, build_encoder
from semdepth.models.depth_net import DepthNet
from semdepth.models.pose import PoseNet
from semdepth.models.registry import build_on_encoder, cfg_get

FORMAT = "semdepth-sde-1"


def build_depth_net(cfg: Any, pretrained: str | Path | None = None, **kwargs: Any) -> DepthNet:
    """The depth network an SdeConfig (object or dict) describes; `pretrained` only for the encoder.
    `kwargs` are the builders' options (training=True, pseudolabel_model=path, pac_impl=...;
    semdepth/models/registry.py), which the plain network ignores. The encoder and decoder bodies are
    those `cfg.architecture` names (semdepth/models/architecture.py)."""
    encoder = build_encoder(architecture_of(cfg), int(cfg_get(cfg, "encoder_layers")), pretrained)
    return build_on_encoder(cfg, encoder, **kwargs)


def build_pose_net(cfg: Any) -> PoseNet:
    return PoseNet(18, float(cfg_get(cfg, "pose_forward_init")))


def save_sde(path: str | Path, depth_net: nn.Module, pose_net: nn.Module, config: dict, meta: dict) -> None:
    """Atomically write the checkpoint (modules may be DDP-wrapped)."""
    from semdepth.training.ddp import unwrap

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
