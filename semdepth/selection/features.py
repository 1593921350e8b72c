"""Teacher outputs for selection: diversity features and the (normalised) disparity the student learns.

Features (Hoyer §5): the SDE depth decoder's level-3 output (1/8 resolution), average-pooled to a
4x8 grid and flattened to 32·C values, then z-scored per dimension over the pool so that no channel
or grid cell dominates the Euclidean distance merely by its scale.

Disparity: the teacher's full-resolution sigmoid disparity, min-max normalised per image as Hoyer's
depth estimator did before saving its 8-bit targets. The normalisation removes the per-image scale
ambiguity of monocular depth, and the far-pixel threshold (0.07) in uncertainty.py is defined on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semdepth.progress import track

FEATURE_LEVEL = 3  # decoder level i has resolution 1/2^i
POOL_GRID = (4, 8)


def pool_features(feat: torch.Tensor, grid: tuple[int, int] = POOL_GRID) -> torch.Tensor:
    """[B, C, h, w] -> [B, C·gh·gw] by adaptive average pooling (channel-major flattening)."""
    return F.adaptive_avg_pool2d(feat, grid).flatten(1)


def zscore(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-dimension z-score over the rows; constant dimensions become 0 (they carry no information)."""
    x = x.to(torch.float64)
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, unbiased=False, keepdim=True)
    return torch.where(std > eps, (x - mean) / std.clamp_min(eps), torch.zeros_like(x))


def normalise_disparity(disp: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image min-max normalisation of [B, 1, H, W] disparity to [0, 1]."""
    flat = disp.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (disp - lo) / (hi - lo).clamp_min(eps)


def to_float(images_u8: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 in [0, 1] on `device`."""
    return images_u8.to(device, non_blocking=True).float().div_(255.0)


@dataclass
class TeacherOutputs:
    features: torch.Tensor  # [N, 32·C] float32, pooled but not yet z-scored
    disparity: torch.Tensor  # [N, 1, H, W] float16 on CPU, per-image normalised to [0, 1]


@torch.no_grad()
def teacher_pass(depth_net: torch.nn.Module, images_u8: torch.Tensor, batch_size: int,
                 device: torch.device | str, progress: bool = True) -> TeacherOutputs:
    """Run the SDE once over the pool (eval mode: BatchNorm statistics must not drift with the batch).

    `depth_net(x)` must return the DepthDecoder dict (`"disp"` per scale, `"features"` per level).
    Guided teachers need no extra inputs in eval mode (`.needs` lists training-batch keys: SEEM
    predicts its own semantics at inference, PAC carries its DeepLab).
    Disparity is kept in float16 on the CPU: it is only a regression target and a mask source, and
    halving its memory matters at Cityscapes scale (2975 x 512 x 1024).
    """
    was_training = depth_net.training
    depth_net.eval()
    feats, disps = [], []
    starts = range(0, images_u8.shape[0], batch_size)
    it = track(starts, "select: teacher pass") if progress else starts
    for s in it:
        out = depth_net(to_float(images_u8[s:s + batch_size], device))
        feats.append(pool_features(out["features"][FEATURE_LEVEL].float()).cpu())
        disps.append(normalise_disparity(out["disp"][0].float()).to(torch.float16).cpu())
    depth_net.train(was_training)
    return TeacherOutputs(torch.cat(feats), torch.cat(disps))
