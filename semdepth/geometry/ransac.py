"""Batched, vectorised RANSAC plane fitting with a least-squares refit.

The filter stage fits one ground plane per training frame, thousands of frames with hundreds of
hypotheses each. A Python loop per hypothesis would dominate the stage, so every hypothesis of every
frame in a batch is a row of a tensor: 3 points are drawn per hypothesis for B frames x I iterations
at once, normals come from one batched cross product and the inlier counts from one broadcast of the
points against all planes (in blocks of hypotheses: on a CPU, blocks whose temporaries fit in
cache are several times faster than one huge broadcast; on a GPU the blocks are large).

Planes are n.X + d = 0 with |n| = 1, oriented so that the origin (the camera) lies on the positive
side: d >= 0 is then the camera's distance to the plane, i.e. the camera height for a ground plane.

The inlier threshold can be *relative* (a fraction of each hypothesis's own d). Monocular depth has
no metric scale, so an absolute threshold would mean something different in every frame; measured
in camera heights it is scale-free: scaling all points by s scales both sides of |n.X + d| < t.d.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PlaneFit:
    """Per-frame result of `fit_planes` (B = number of frames)."""

    normal: Tensor  # [B,3] unit normal, origin on the positive side; NaN where not ok
    offset: Tensor  # [B] d in n.X + d = 0 (>= 0: camera height); NaN where not ok
    inliers: Tensor  # [B,N] bool inliers of the final plane (all False where not ok)
    inlier_ratio: Tensor  # [B] inliers / valid points (0 where not ok)
    num_valid: Tensor  # [B] number of valid points that were scored
    ok: Tensor  # [B] bool: a plane with at least `min_inliers` inliers was found


def _orient(normal: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    """Flip (n, d) so that d >= 0: the origin is on the positive side of the plane."""
    sign = torch.where(offset < 0, -1.0, 1.0).to(normal.dtype)
    return normal * sign.unsqueeze(-1), offset * sign


def _inlier_mask(points_t: Tensor, valid: Tensor, normal: Tensor, offset: Tensor, threshold: float,
                 relative: bool) -> Tensor:
    """[B,K,N] inliers of K planes per frame (points_t [B,3,N], normal [B,K,3], offset [B,K]).

    |n.X + d| < thr for all planes with one batched product, in place afterwards. This is the hot
    loop of the stage; [B,K,N] keeps the reduction over points contiguous, and callers pass K small
    enough that the temporaries stay in cache (measured: ~5x faster than one big block)."""
    dist = torch.baddbmm(offset.unsqueeze(-1), normal, points_t).abs_()
    thr = threshold * offset.abs().unsqueeze(-1) if relative else torch.full_like(offset, threshold).unsqueeze(-1)
    return (dist < thr) & valid.unsqueeze(1)


def _refit(points: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Total least squares plane through the weighted points: the normal is the eigenvector of the
    smallest eigenvalue of the centred covariance (float64: 3x3 per frame, cheap and stable)."""
    w = weights.to(torch.float64)
    p = points.to(torch.float64)
    cnt = w.sum(1).clamp(min=1.0)
    centroid = (w.unsqueeze(-1) * p).sum(1) / cnt.unsqueeze(-1)
    q = (p - centroid.unsqueeze(1)) * w.unsqueeze(-1).sqrt()
    cov = q.transpose(1, 2) @ q / cnt.view(-1, 1, 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    normal = vecs[..., 0]
    offset = -(normal * centroid).sum(-1)
    normal, offset = _orient(normal, offset)
    return normal.to(points.dtype), offset.to(points.dtype)


def fit_planes(points: Tensor, valid: Tensor, *, iterations: int, threshold: float, relative: bool = True,
               sample_mask: Tensor | None = None, up: tuple[float, float, float] | None = None,
               max_tilt_deg: float | None = None, min_inliers: int = 3, refit_steps: int = 2,
               generator: torch.Generator | None = None, max_chunk_elems: int | None = None) -> PlaneFit:
    """Fit one plane per frame to `points` [B,N,3] where `valid` [B,N] is True.

    iterations: RANSAC hypotheses per frame. threshold: inlier distance, a fraction of each
    hypothesis's offset when `relative` (scale-free), else absolute. sample_mask: the region the
    3-point samples are drawn from (default: all valid points); inliers are always scored on all
    valid points. up/max_tilt_deg: hypotheses whose (oriented) normal is more than max_tilt_deg away
    from `up` are rejected (a ground plane faces the camera from below), and so is a final refitted
    plane that leaves that cone. min_inliers: fewer inliers -> ok False. refit_steps: least-squares
    refits on the inliers (each recomputes the inliers).
    The random draws come from `generator` on the CPU, so results are the same on every device.
    Frames with fewer than 3 valid sample points return ok=False instead of raising.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [B,N,3], got {tuple(points.shape)}")
    if valid.shape != points.shape[:2]:
        raise ValueError(f"valid must be {tuple(points.shape[:2])}, got {tuple(valid.shape)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    B, N_all, _ = points.shape
    dev, dt = points.device, points.dtype
    valid_all = valid.to(torch.bool) & torch.isfinite(points).all(-1)
    smask_all = valid_all if sample_mask is None else (sample_mask.to(torch.bool) & valid_all)
    n_valid = valid_all.sum(1)
    # Compact: valid points first (stable, so pixel order is kept), padded to the largest count in the
    # batch. Scoring then touches only real points (a few thousand of a frame's H*W pixels).
    keep = torch.argsort((~valid_all).to(torch.uint8), dim=1, stable=True)[:, :max(1, int(n_valid.max()))]
    N = keep.shape[1]
    valid = valid_all.gather(1, keep)
    smask = smask_all.gather(1, keep)
    pts = points.gather(1, keep.unsqueeze(-1).expand(-1, -1, 3))
    pts = torch.where(valid.unsqueeze(-1), pts, torch.zeros((), dtype=dt, device=dev))
    n_sample = smask.sum(1)
    pts_t = pts.transpose(1, 2).contiguous()

    # --- hypotheses: 3 sample points for every (frame, iteration) at once ---------------------
    # Valid sample indices first (stable sort keeps them in pixel order), then index by a uniform draw.
    order = torch.argsort((~smask).to(torch.uint8), dim=1, stable=True)
    u = torch.rand(B, iterations, 3, generator=generator, dtype=torch.float64).to(dev)
    k = (u * n_sample.clamp(min=1).view(B, 1, 1)).long()
    k = torch.minimum(k, (n_sample - 1).clamp(min=0).view(B, 1, 1))  # u < 1, but guard float rounding
    idx = order.gather(1, k.view(B, -1))
    tri = pts.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3)).view(B, iterations, 3, 3)
    e1, e2 = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
    cross = torch.linalg.cross(e1, e2)
    area = cross.norm(dim=-1)
    # Degenerate (repeated or collinear) samples: sin(angle) ~ 0. Scale-free test.
    good = area > 1e-6 * (e1.norm(dim=-1) * e2.norm(dim=-1)).clamp(min=torch.finfo(dt).tiny)
    normal = cross / area.clamp(min=torch.finfo(dt).tiny).unsqueeze(-1)
    offset = -(normal * tri[:, :, 0]).sum(-1)
    normal, offset = _orient(normal, offset)
    tilted = up is not None and max_tilt_deg is not None
    if tilted:
        upv = torch.tensor(up, dtype=dt, device=dev)
        upv = upv / upv.norm()
        cos_tilt = math.cos(math.radians(max_tilt_deg))
        good &= (normal @ upv) >= cos_tilt
    good &= (n_sample >= 3).view(B, 1)

    # --- score all hypotheses by broadcasting, in blocks of hypotheses ----------------------------
    if max_chunk_elems is None:
        max_chunk_elems = 1 << 26 if dev.type == "cuda" else 1 << 20
    chunk = max(1, max_chunk_elems // max(1, B * N))
    counts = []
    for s in range(0, iterations, chunk):
        inl = _inlier_mask(pts_t, valid, normal[:, s:s + chunk], offset[:, s:s + chunk], threshold, relative)
        counts.append(inl.sum(-1))
    score = torch.cat(counts, 1)
    score = torch.where(good, score, torch.full_like(score, -1))
    best = score.argmax(1)  # first maximum: deterministic
    best_score = score.gather(1, best.view(B, 1)).squeeze(1)
    n_best = normal.gather(1, best.view(B, 1, 1).expand(-1, 1, 3))
    d_best = offset.gather(1, best.view(B, 1))
    inliers = _inlier_mask(pts_t, valid, n_best, d_best, threshold, relative).squeeze(1)

    # --- least-squares refit on the inliers -------------------------------------------------------
    for _ in range(refit_steps):
        enough = inliers.sum(1) >= 3
        n_ref, d_ref = _refit(pts, inliers.to(dt))
        n_best = torch.where(enough.view(B, 1, 1), n_ref.unsqueeze(1), n_best)
        d_best = torch.where(enough.view(B, 1), d_ref.unsqueeze(1), d_best)
        inliers = _inlier_mask(pts_t, valid, n_best, d_best, threshold, relative).squeeze(1)

    n_inl = inliers.sum(1)
    ok = (best_score >= max(3, min_inliers)) & (n_inl >= max(3, min_inliers))
    if tilted:  # the refit may leave the allowed cone (e.g. a noisy wall whose sample looked tilted)
        ok &= (n_best.squeeze(1) @ upv) >= cos_tilt
    nan = torch.full((), float("nan"), dtype=dt, device=dev)
    normal_out = torch.where(ok.view(B, 1), n_best.squeeze(1), nan)
    offset_out = torch.where(ok, d_best.squeeze(1), nan)
    inliers = torch.zeros(B, N_all, dtype=torch.bool, device=dev).scatter_(1, keep, inliers & ok.view(B, 1))
    ratio = torch.where(ok, n_inl.to(dt) / n_valid.clamp(min=1).to(dt), torch.zeros((), dtype=dt, device=dev))
    return PlaneFit(normal_out, offset_out, inliers, ratio, n_valid, ok)
