"""Ground-plane test for two-stage depth training (Guizilini et al. ICLR'20 §4.3; docs/method.md §5).

Objects moving at the camera's speed look static to the photometric loss, so a self-supervised depth
network learns to put them at infinity; back-projected, those pixels land far *below* the road. Per
frame: back-project the stage-1 depth, fit the ground plane by RANSAC, count the pixels that fall
below it by more than a margin, and drop the frame when the count exceeds an area-scaled threshold.

Choices the paper leaves open (documented here and exposed as `filter.*` params):

* **Scale.** Monocular depth has an unknown scale per frame, so every length is measured in units of
  the fitted camera height h (the plane n.X + h = 0 is oriented so the camera is above it, h > 0): the
  RANSAC inlier threshold is `inlier_threshold * h` of each hypothesis, the below-ground margin is
  `margin * h`.
* **Near range without a metric scale.** "Within `near_range` camera heights" is turned into an image
  rule that needs no depth: on a level camera, a ground point at distance Z = r*h projects to row
  v = cy + fy/r, so the points closer than near_range*h are exactly the rows v >= cy + fy/near_range.
  The rule trusts the (approximately level, as in driving data) camera instead of the depth being
  tested, which matters because the depth is what may be wrong.
* **Candidates.** Road pixels (train id 0) in the pseudo-labels inside that near band and above the
  ego-hood rows; when fewer than `min_ground_points` (or no train-id labels at all), the lower-central
  region instead: the same rows, middle half of the columns.
* **Plausible planes.** Hypotheses whose normal is more than `max_tilt` degrees from the camera's up
  axis (-y in OpenCV coordinates) are rejected, so a car's back or a wall in the fallback region
  cannot pass as the ground.
* **Enough ground.** A frame whose candidates or plane inliers number fewer than `min_ground_points`
  is kept (it cannot be judged) and counted in the metrics.
* **Counting.** Pixels with valid depth above the hood rows whose signed height n.X + h is below
  -margin*h. Along a pixel's ray the height is h*(1 - Z/Z_g), Z_g being where the ray meets the plane,
  so the margin is also a depth factor: below ground <=> Z > (1 + margin)*Z_g. Only rays that meet the
  plane within `near_range` camera heights are counted: near the horizon Z_g blows up, and a plane
  tilt error of d radians moves it by ~d*Z_g/h relative, so far pixels would be flagged by the fit's
  noise rather than by the depth. Threshold = threshold_px * (H*W) / reference_area (paper: 10 px at
  640x192).
* **Defaults** (margin 1.0, near_range 20) were chosen with `benchmarks/filter_oracle.py` on SynthCity
  (90 training frames at 96x192, 27 with a lead car) with exact depth, lead-car pixels pushed to the
  maximum depth: >= 130 below-ground pixels on every lead-car frame, 0 on clean ones. With smooth
  multiplicative depth noise (log-std 0.1, 3 px blur) margin 0.3 wrongly dropped 71% of the clean
  frames and margin 1.0 none (recall 1.0 in both); at log-std 0.2 margin 1.0 still dropped 30%.
* **Sweep.** `margins` asks for the below-ground counts at other margins from the same fit, in the
  same pass (`GroundResult.margin_counts`): what the filter stage's margin/threshold figure is made of.
  A larger margin is a stricter test on the same trusted pixels, so the counts never grow with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from semdepth.geometry.camera import backproject
from semdepth.geometry.ransac import fit_planes

UP = (0.0, -1.0, 0.0)  # OpenCV camera: y points down


def below_threshold(height: int, width: int, threshold_px: float, reference_area: int) -> float:
    """The paper's pixel count (at its resolution) scaled with image area."""
    return float(threshold_px) * (height * width) / float(reference_area)


def hood_row(height: int, hood_fraction: float) -> int:
    """First row of the ego-vehicle hood (rows >= this are excluded everywhere)."""
    return height - int(round(height * hood_fraction))


def near_band(height: int, width: int, cy: Tensor, fy: Tensor, near_range: float, hood_fraction: float) -> Tensor:
    """[B,H,W] bool: rows that see level ground closer than near_range camera heights, above the hood."""
    rows = torch.arange(height, dtype=cy.dtype, device=cy.device).view(1, height, 1)
    first = (cy + fy / near_range).view(-1, 1, 1)
    band = (rows >= first) & (rows < hood_row(height, hood_fraction))
    return band.expand(-1, height, width)


@dataclass
class GroundResult:
    """Per-frame verdicts for a batch of B frames."""

    normal: Tensor  # [B,3] plane normal (camera on the positive side); NaN without enough ground
    offset: Tensor  # [B] h in n.X + h = 0: the camera height in the depth's own units; NaN likewise
    inlier_ratio: Tensor  # [B] RANSAC inliers / candidate points
    below: Tensor  # [B,H,W] bool: pixels more than margin*h below the plane
    below_count: Tensor  # [B] int64
    enough_ground: Tensor  # [B] bool
    fallback: Tensor  # [B] bool: candidates came from the lower-central region, not road labels
    candidates: Tensor  # [B,H,W] bool: the points the plane was fitted to
    threshold: float  # drop when below_count > threshold
    kept: Tensor  # [B] bool
    margin_counts: Tensor  # [B,M] int64: below_count at each of the M requested sweep margins


def analyse_ground(depth: Tensor, K: Tensor, road: Tensor | None, cfg, hood_fraction: float,
                   generator: torch.Generator | None = None, margins: Sequence[float] = ()) -> GroundResult:
    """Ground-plane verdicts for depth [B,1,H,W] (any positive scale; inf/0/NaN = invalid).

    K: [B,3,3] intrinsics at this resolution. road: [B,H,W] bool road pixels from the pseudo-labels,
    or None (no train-id labels) -> the lower-central fallback for every frame. cfg: a FilterConfig
    (ransac_iterations, inlier_threshold, margin, threshold_px, reference_area, near_range,
    min_ground_points, max_tilt). margins: extra margins to count below-ground pixels at (the sweep;
    they change nothing else).
    """
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    B, _, H, W = depth.shape
    depth = depth.to(torch.float32)
    K = K.to(depth.device, torch.float32)
    valid = (torch.isfinite(depth) & (depth > 0)).squeeze(1)
    pts = backproject(torch.where(valid.unsqueeze(1), depth, torch.ones_like(depth)), torch.linalg.inv(K))
    pts = pts.transpose(1, 2)  # [B,HW,3]

    band = near_band(H, W, K[:, 1, 2], K[:, 1, 1], cfg.near_range, hood_fraction) & valid
    if road is None:
        road_cand = torch.zeros_like(band)
    else:
        road_cand = band & road.to(device=band.device, dtype=torch.bool)
    cols = torch.arange(W, device=band.device)
    central = ((cols >= W // 4) & (cols < W - W // 4)).view(1, 1, W)
    fallback = road_cand.flatten(1).sum(1) < cfg.min_ground_points
    cand = torch.where(fallback.view(B, 1, 1), band & central, road_cand)
    n_cand = cand.flatten(1).sum(1)

    fit = fit_planes(pts, cand.flatten(1), iterations=cfg.ransac_iterations, threshold=cfg.inlier_threshold,
                     relative=True, up=UP, max_tilt_deg=cfg.max_tilt, min_inliers=cfg.min_ground_points,
                     generator=generator)
    enough = fit.ok & (n_cand >= cfg.min_ground_points)

    offset = torch.nan_to_num(fit.offset).unsqueeze(1)
    height = (pts @ torch.nan_to_num(fit.normal).unsqueeze(-1)).squeeze(-1) + offset
    not_hood = (torch.arange(H, device=band.device) < hood_row(H, hood_fraction)).view(1, H, 1)
    # Only where the plane is trusted: rays meeting it within near_range camera heights. Along a ray
    # X = Z*r the plane is reached at Z_g = h / (-n.r), so this is -n.r >= 1/near_range.
    ray = pts / torch.where(valid, depth.squeeze(1), torch.ones_like(depth.squeeze(1))).reshape(B, H * W, 1)
    in_range = -(ray @ torch.nan_to_num(fit.normal).unsqueeze(-1)).squeeze(-1) >= 1.0 / cfg.near_range
    trusted = in_range.view(B, H, W) & valid & not_hood & enough.view(B, 1, 1)
    below = _below(height, offset, cfg.margin, trusted)
    count = below.flatten(1).sum(1)
    sweep = [_below(height, offset, m, trusted).flatten(1).sum(1) for m in margins]
    margin_counts = torch.stack(sweep, 1) if sweep else torch.zeros(B, 0, dtype=count.dtype, device=count.device)
    thr = below_threshold(H, W, cfg.threshold_px, cfg.reference_area)
    kept = ~enough | (count.to(torch.float64) <= thr)
    nan = torch.full((), float("nan"), device=depth.device)
    return GroundResult(
        normal=torch.where(enough.view(B, 1), fit.normal, nan),
        offset=torch.where(enough, fit.offset, nan),
        inlier_ratio=torch.where(enough, fit.inlier_ratio, torch.zeros((), device=depth.device)),
        below=below, below_count=count, enough_ground=enough, fallback=fallback, candidates=cand,
        threshold=thr, kept=kept, margin_counts=margin_counts)


def _below(height: Tensor, offset: Tensor, margin: float, trusted: Tensor) -> Tensor:
    """[B,H,W] bool: trusted pixels more than margin*h below the plane (height [B,HW], offset [B,1])."""
    return (height < -margin * offset).view(trusted.shape) & trusted
