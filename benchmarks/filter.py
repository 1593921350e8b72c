"""Throughput of the filter stage at the working resolution: stage-1 depth inference and the
RANSAC ground test measured separately, and the vectorised RANSAC against a naive loop over hypotheses.

    python benchmarks/filter.py [--height 96 --width 192 --batch 16 --iterations 256 --threads 1]

Prints one JSON row per measurement. The depth network is randomly initialised (speed does not depend
on the weights); the ground test runs on analytic road scenes with depth noise and a lead-car hole,
so RANSAC sees realistic candidate counts. The naive loop uses the same random draws and must pick the
same plane; the row says whether it did. `filter_ground_sweep` times the same ground test with the
filter stage's sweep margins counted in the same pass (what the margin/threshold figure costs).
"""
from __future__ import annotations

import sys
from pathlib import Path

# Running `python benchmarks/filter.py` puts benchmarks/ first on sys.path, where sibling scripts
# (benchmarks/select.py) would shadow standard-library modules that torch imports: use the repo root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from semdepth.config import FilterConfig, SdeConfig, to_dict  # noqa: E402
from semdepth.filtering import sweep_margins  # noqa: E402
from semdepth.geometry.camera import backproject  # noqa: E402
from semdepth.geometry.depth import disp_to_depth  # noqa: E402
from semdepth.geometry.ground import analyse_ground, near_band  # noqa: E402
from semdepth.geometry.ransac import fit_planes  # noqa: E402
from semdepth.models.sde import build_depth_net  # noqa: E402


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(**row) -> None:
    row["peak_rss_mb"] = round(maxrss_mb(), 1)
    print(json.dumps(row), flush=True)


def scenes(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depth [B,1,H,W] of a level camera 1.5 above a road (3% multiplicative noise; every other frame
    with a lead-car-sized hole at the maximum depth), intrinsics and road masks."""
    g = torch.Generator().manual_seed(seed)
    f = 1.1 * w
    K = torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]).expand(b, 3, 3).contiguous()
    v = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    ray_y = (v - K[0, 1, 2]) / f
    depth = torch.where(ray_y > 0, 1.5 / ray_y.clamp(min=1e-9), torch.full_like(ray_y, 100.0)).clamp(max=100.0)
    depth = depth.expand(b, 1, h, w) * (1 + 0.03 * torch.randn(b, 1, h, w, generator=g))
    road = (v > h / 2).expand(b, h, w).clone()
    rs, cs = slice(int(0.7 * h), int(0.8 * h)), slice(int(0.42 * w), int(0.58 * w))
    depth[1::2, :, rs, cs] = 100.0
    road[:, rs, cs] = False
    return depth, K, road


def naive_fit(points: torch.Tensor, mask: torch.Tensor, u: torch.Tensor, threshold: float, cos_tilt: float) -> tuple:
    """One frame, one hypothesis at a time (the way RANSAC is usually written)."""
    idx_valid = torch.nonzero(mask).squeeze(1)
    pts = points[idx_valid]
    up = torch.tensor([0.0, -1.0, 0.0])
    best, best_n, best_d = -1, None, None
    for k in range(u.shape[0]):
        ii = (u[k] * len(idx_valid)).long().clamp(max=len(idx_valid) - 1)
        p0, p1, p2 = pts[ii[0]], pts[ii[1]], pts[ii[2]]
        e1, e2 = p1 - p0, p2 - p0
        n = torch.linalg.cross(e1, e2)
        if n.norm() <= 1e-6 * e1.norm() * e2.norm():
            continue
        n = n / n.norm()
        d = -(n @ p0)
        if d < 0:
            n, d = -n, -d
        if n @ up < cos_tilt:
            continue
        count = int(((pts @ n + d).abs() < threshold * d).sum())
        if count > best:
            best, best_n, best_d = count, n, d
    return best, best_n, best_d


def time_it(fn, repeat: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive-frames", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (the naive loop always runs on the CPU)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    h, w, b = a.height, a.width, a.batch
    cfg = FilterConfig(ransac_iterations=a.iterations)
    sde = to_dict(SdeConfig())
    common = {"height": h, "width": w, "batch": b, "threads": a.threads, "device": dev.type}

    # --- stage-1 depth inference -------------------------------------------------------------------
    torch.manual_seed(0)
    net = build_depth_net(sde).eval().to(dev)
    x = torch.rand(b, 3, h, w, device=dev)

    def infer() -> None:
        with torch.inference_mode():
            disp_to_depth(net(x)["disp"][0], sde["min_depth"], sde["max_depth"])

    t = time_it(infer, a.repeat, dev)
    emit(bench="filter_depth_inference", **common, seconds_per_batch=round(t, 4), frames_per_s=round(b / t, 1))

    # --- ground test (back-projection, candidates, RANSAC, refit, counting) --------------------------
    depth, K, road = (t.to(dev) for t in scenes(b, h, w))
    gen = torch.Generator()

    def ground() -> None:
        gen.manual_seed(0)
        analyse_ground(depth, K, road, cfg, 0.1, gen)

    t = time_it(ground, a.repeat, dev)
    res = analyse_ground(depth, K, road, cfg, 0.1, torch.Generator().manual_seed(0))
    emit(bench="filter_ground_ransac", **common, iterations=a.iterations, seconds_per_batch=round(t, 4),
         frames_per_s=round(b / t, 1), dropped=int((~res.kept).sum()), with_hole=b // 2,
         candidates_per_frame=int(res.candidates.flatten(1).sum(1).float().mean()))
    margins = sweep_margins(cfg)

    def ground_sweep() -> None:
        gen.manual_seed(0)
        analyse_ground(depth, K, road, cfg, 0.1, gen, margins=margins)

    t_sweep = time_it(ground_sweep, a.repeat, dev)
    emit(bench="filter_ground_sweep", **common, iterations=a.iterations, margins=len(margins),
         seconds_per_batch=round(t_sweep, 4), frames_per_s=round(b / t_sweep, 1),
         overhead_vs_single_margin=round(t_sweep / t - 1.0, 3))

    # --- RANSAC hypotheses: vectorised vs a Python loop per hypothesis -------------------------------
    pts = backproject(depth, torch.linalg.inv(K)).transpose(1, 2).contiguous()
    cand = (near_band(h, w, K[:, 1, 2], K[:, 1, 1], cfg.near_range, 0.1) & road).flatten(1)
    nf = min(a.naive_frames, b)
    fit_kw = dict(iterations=a.iterations, threshold=cfg.inlier_threshold, up=(0, -1, 0), max_tilt_deg=cfg.max_tilt,
                  min_inliers=cfg.min_ground_points, refit_steps=0)
    t_vec = time_it(lambda: fit_planes(pts, cand, generator=torch.Generator().manual_seed(1), **fit_kw), a.repeat, dev)
    fit = fit_planes(pts[:nf], cand[:nf], generator=torch.Generator().manual_seed(1), **fit_kw)
    pts, cand, fit.normal = pts.cpu(), cand.cpu(), fit.normal.cpu()
    u = torch.rand(nf, a.iterations, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cos_tilt = torch.cos(torch.deg2rad(torch.tensor(cfg.max_tilt))).item()
    t0 = time.perf_counter()
    naive = [naive_fit(pts[i], cand[i], u[i], cfg.inlier_threshold, cos_tilt) for i in range(nf)]
    t_naive = (time.perf_counter() - t0) / nf
    same = all(torch.allclose(fit.normal[i], naive[i][1], atol=1e-5) for i in range(nf))
    emit(bench="filter_ransac_vectorised_vs_loop", **common, iterations=a.iterations,
         vectorised_s_per_frame=round(t_vec / b, 5), naive_s_per_frame=round(t_naive, 5),
         vectorised_frames_per_s=round(b / t_vec, 1), naive_frames_per_s=round(1 / t_naive, 2),
         speedup=round(t_naive / (t_vec / b), 1), same_plane=same)


if __name__ == "__main__":
    main()
