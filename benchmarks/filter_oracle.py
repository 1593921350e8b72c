"""Sensitivity of the ground-plane filter on SynthCity with exact depth (how the defaults were chosen).

    python benchmarks/filter_oracle.py [--prepared data/prepared --params params.yaml
                                        --margins 0.3 1.0 --noise 0 0.1 0.2 --blur 3 --push 5]

"Stage-1 depth" here is SynthCity's exact depth (sky = the network's maximum depth, 100). In snippets
with a lead car, the moving-object pixels are pushed away (semdepth.filtering.push_far: to that maximum,
or multiplied by `--push`): the failure the filter exists to catch. Smooth multiplicative noise
exp(noise * N), N a Gaussian field blurred by `blur` px and renormalised to unit std, stands in for an
imperfect network. Road candidates come from the GT labels where a frame has them (annotated frames),
else the lower-central fallback. All margins are counted from one RANSAC fit per frame (as the filter
stage's sweep). One JSON row per (margin, noise) at filter.threshold_px: recall of lead-car frames,
share of clean frames wrongly dropped, below-ground counts; and one `filter_oracle_ratios` row per
noise: the artifact measure of the filter stage (semdepth.filtering.depth_ratios) on this depth,
lead-car against clean frames. Needs a prepared SynthCity tree (synthesize + downsample); it reads no model.
"""
from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:  # see benchmarks/filter.py
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from semdepth.config import load_params  # noqa: E402
from semdepth.data.manifest import training_triplets  # noqa: E402
from semdepth.filtering import depth_ratios, push_far, sweep_margins  # noqa: E402
from semdepth.geometry.ground import analyse_ground  # noqa: E402
from semdepth.io import read_table, resolve  # noqa: E402

MAX_DEPTH = 100.0  # the SDE's maximum depth: sky, and where the oracle puts a pushed car


def load_frames(prepared: Path) -> list[dict]:
    m = training_triplets(read_table(prepared / "manifest.parquet"))
    if m.empty or m["depth_exact"].isna().all() or m["lead_car"].isna().all():
        raise SystemExit(f"{prepared}: needs SynthCity training triplets with exact depth and lead-car flags")
    out = []
    for r in m.itertuples():
        d = np.load(resolve(r.depth_exact, prepared)).astype(np.float32)
        d = np.minimum(np.where(d > 0, d, MAX_DEPTH), MAX_DEPTH)
        moving = np.zeros(d.shape, bool)
        if isinstance(r.moving, str):
            moving = cv2.imread(str(resolve(r.moving, prepared)), cv2.IMREAD_UNCHANGED) > 0
        road = None
        if isinstance(r.label, str):
            road = cv2.imread(str(resolve(r.label, prepared)), cv2.IMREAD_UNCHANGED) == 0
        K = np.array([[r.fx, 0, r.cx], [0, r.fy, r.cy], [0, 0, 1.0]], np.float32)
        gt = np.load(resolve(r.depth_exact, prepared)).astype(np.float32)
        out.append(dict(id=r.id, lead=bool(r.lead_car), depth=d, gt=gt, moving=moving,
                        hole=moving & bool(r.lead_car), road=road, K=K))
    return out


def noisy(depth: np.ndarray, noise: float, blur: float, seed: int) -> np.ndarray:
    if noise <= 0:
        return depth
    f = np.random.default_rng(seed).standard_normal(depth.shape).astype(np.float32)
    if blur > 0:
        f = cv2.GaussianBlur(f, (0, 0), blur)
    return depth * np.exp(noise * f / f.std())


def _median(x: list[float]) -> float | None:
    x = [v for v in x if np.isfinite(v)]
    return float(np.median(x)) if x else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--margins", type=float, nargs="+", default=None, help="default: the filter stage's sweep")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    ap.add_argument("--blur", type=float, default=3.0)
    ap.add_argument("--push", type=float, default=None, help="multiply lead-car pixels (default: to max depth)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    p = load_params(a.params)
    margins = sorted(set(a.margins)) if a.margins else sweep_margins(p.filter)
    frames = load_frames(a.prepared)
    lead = np.array([f["lead"] for f in frames])
    for noise in a.noise:
        t0 = time.perf_counter()
        counts, enough, ratios = [], [], []
        for i, f in enumerate(frames):
            d = push_far(noisy(f["depth"], noise, a.blur, i), f["hole"], MAX_DEPTH, a.push)
            road = None if f["road"] is None else torch.from_numpy(f["road"])[None]
            res = analyse_ground(torch.from_numpy(d)[None, None], torch.from_numpy(f["K"])[None], road, p.filter,
                                 p.data.hood_fraction, torch.Generator().manual_seed(p.seed), margins=margins)
            counts.append(res.margin_counts[0].numpy())
            enough.append(bool(res.enough_ground[0]))
            ratios.append(depth_ratios(d, f["gt"], f["moving"], hood_fraction=p.data.hood_fraction,
                                       max_depth=MAX_DEPTH))
        seconds = time.perf_counter() - t0
        counts_all, ok = np.stack(counts), np.array(enough)
        for j, margin in enumerate(margins):
            c = counts_all[:, j]
            dr = ok & (c > res.threshold)
            print(json.dumps(dict(
                bench="filter_oracle", margin=margin, noise=noise, blur=a.blur, push=a.push,
                near_range=p.filter.near_range, frames=len(frames), lead_car_frames=int(lead.sum()),
                threshold=res.threshold, recall=float((dr & lead).sum() / max(1, lead.sum())),
                clean_wrongly_dropped=float((dr & ~lead).sum() / max(1, (~lead).sum())),
                not_enough_ground=int(len(ok) - ok.sum()),
                lead_count_min=int(c[lead].min()) if lead.any() else None,
                clean_count_p95=float(np.percentile(c[~lead], 95)) if (~lead).any() else None,
                frames_per_s=round(len(frames) / seconds, 1),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))), flush=True)
        mv = [r.moving for r in ratios]
        print(json.dumps(dict(
            bench="filter_oracle_ratios", noise=noise, blur=a.blur, push=a.push,
            lead_moving_ratio_median=_median([m for m, le in zip(mv, lead) if le]),
            clean_moving_ratio_median=_median([m for m, le in zip(mv, lead) if not le]),
            static_ratio_median=_median([r.static for r in ratios]))), flush=True)


if __name__ == "__main__":
    main()
