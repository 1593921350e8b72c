"""Monodepth2's self-supervised objective: per-pixel minimum reprojection with auto-masking plus
edge-aware smoothness, all four disparity scales upsampled to the input resolution.

Differences from monodepth2's code, on purpose:
- the identity errors pe(I_s, I_t) of the unwarped sources do not depend on the scale, so they (and
  their 1e-5 tie-breaking noise) are computed once per batch, not once per scale;
- all scales and sources are warped and scored in one batched call (fewer, larger kernels);
- warping samples with align_corners consistent with the pixel normalisation (semdepth.geometry).
`identity_once=False, batched=False` restores the naive per-scale loop (benchmarks/sde_step.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from semdepth.geometry.camera import ALIGN_CORNERS, backproject, project
from semdepth.geometry.depth import disp_to_depth
from semdepth.losses.photometric import photometric_error
from semdepth.losses.smoothness import scale_weight, smoothness_loss

TIE_NOISE = 1e-5


def identity_errors(target: torch.Tensor, sources: Sequence[torch.Tensor], noise: bool = True) -> torch.Tensor:
    """pe of each unwarped source against the target, [B,S,H,W], plus 1e-5·N(0,1) to break ties."""
    b = target.shape[0]
    err = photometric_error(torch.cat(list(sources), 0), target)
    err = err.reshape(len(sources), b, *err.shape[-2:]).transpose(0, 1)
    if noise:
        err = err + TIE_NOISE * torch.randn_like(err)
    return err


def warp_sources(depth: torch.Tensor, sources: Sequence[torch.Tensor], T_src_tgt: Sequence[torch.Tensor],
                 K: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """depth [N,1,H,W] where N = k·B (k depth maps per image, e.g. one per scale), sources [B,3,H,W]
    with their T [B,4,4] -> warped images [S,N,3,H,W]."""
    n, _, h, w = depth.shape
    b = K.shape[0]
    k = n // b
    rep = lambda t: t.repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731 - [B,...] -> [k·B,...]
    Kr, pts = rep(K), backproject(depth, rep(inv_K))
    out = []
    for src, T in zip(sources, T_src_tgt):
        grid = project(pts, Kr, rep(T), h, w)
        out.append(F.grid_sample(rep(src), grid.to(src.dtype), mode="bilinear", padding_mode="border",
                                 align_corners=ALIGN_CORNERS))
    return torch.stack(out)


@dataclass(frozen=True)
class ObjectiveConfig:
    min_depth: float = 0.1
    max_depth: float = 100.0
    smoothness: float = 1e-3
    automask: bool = True
    identity_once: bool = True  # compute identity errors once per batch (False: per scale, as monodepth2)
    batched: bool = True  # warp/score all scales in one call (False: a loop over scales)


def self_supervised_loss(disps: dict[int, torch.Tensor], target: torch.Tensor, sources: Sequence[torch.Tensor],
                         T_src_tgt: Sequence[torch.Tensor], K: torch.Tensor, inv_K: torch.Tensor,
                         cfg: ObjectiveConfig = ObjectiveConfig()) -> dict[str, torch.Tensor]:
    """Total loss = mean over scales of (min-reprojection photometric + 1e-3·2^-s smoothness).

    disps: {scale: sigmoid disparity [B,1,H/2^s,W/2^s]}; target/sources: un-augmented colour [B,3,H,W];
    T_src_tgt: target camera -> source camera per source. Returns a dict with "loss" (scalar with
    grad), "photometric", "smoothness", "automask" (share of pixels where an identity error wins at
    scale 0, no grad) and "identity_mask" ([B,1,H,W] bool at scale 0).
    """
    b, _, h, w = target.shape
    scales = sorted(disps)
    ident = identity_errors(target, sources) if cfg.automask and cfg.identity_once else None
    up = [F.interpolate(disps[s], size=(h, w), mode="bilinear", align_corners=False) if s else disps[s]
          for s in scales]

    def min_reproj(reproj: torch.Tensor, ident_s: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # reproj [B,S,H,W]; identity first so that exact ties (impossible with noise) favour it
        allerr = reproj if ident_s is None else torch.cat([ident_s, reproj], 1)
        best, idx = allerr.min(dim=1, keepdim=True)
        n_id = 0 if ident_s is None else ident_s.shape[1]
        return best.mean(), idx < n_id

    photo_terms: list[torch.Tensor] = []
    mask0 = None
    if cfg.batched:
        _, depth = disp_to_depth(torch.cat(up, 0), cfg.min_depth, cfg.max_depth)
        warped = warp_sources(depth, sources, T_src_tgt, K, inv_K)  # [S, n·B, 3, H, W]
        s_count, nb = warped.shape[:2]
        err = photometric_error(warped.reshape(s_count * nb, 3, h, w), target)
        err = err.reshape(s_count, len(scales), b, h, w).permute(1, 2, 0, 3, 4)  # [n, B, S, H, W]
        for i in range(len(scales)):
            id_s = ident if cfg.identity_once or not cfg.automask else identity_errors(target, sources)
            term, m = min_reproj(err[i], id_s if cfg.automask else None)
            photo_terms.append(term)
            mask0 = m if mask0 is None else mask0
    else:
        for i, s in enumerate(scales):
            _, depth = disp_to_depth(up[i], cfg.min_depth, cfg.max_depth)
            warped = warp_sources(depth, sources, T_src_tgt, K, inv_K)
            errs = torch.cat([photometric_error(wi, target) for wi in warped], 1)
            id_s = (ident if cfg.identity_once else identity_errors(target, sources)) if cfg.automask else None
            term, m = min_reproj(errs, id_s)
            photo_terms.append(term)
            mask0 = m if mask0 is None else mask0

    smooth_terms = []
    for s in scales:
        d = disps[s]
        img = target if d.shape[-2:] == target.shape[-2:] else F.interpolate(target, size=d.shape[-2:], mode="area")
        smooth_terms.append(scale_weight(cfg.smoothness, s) * smoothness_loss(d, img))
    photometric = torch.stack(photo_terms).mean()
    smoothness = torch.stack(smooth_terms).mean()
    return {"loss": photometric + smoothness, "photometric": photometric.detach(),
            "smoothness": smoothness.detach(), "automask": mask0.float().mean().detach(), "identity_mask": mask0}
