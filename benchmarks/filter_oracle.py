"""Sensitivity of the ground-plane filter on SynthCity with exact depth (how the defaults were chosen).

    python benchmarks/filter_oracle.py [--prepared data/prepared --params params.yaml
                                        --margins 0.3 1.0 --noise 0 0.1 0.2 --blur 3]

"Stage-1 depth" here is SynthCity's exact depth (sky = the network's maximum depth, 100). In snippets
with a same-speed lead car, the moving-object pixels are pushed to that maximum: the failure the filter
exists to catch. Smooth multiplicative noise exp(noise * N), N a Gaussian field blurred by `blur` px and
renormalised to unit std, stands in for an imperfect network. Road candidates come from the GT labels
where a frame has them (annotated frames), else the lower-central fallback. One JSON row per
(margin, noise): recall of lead-car frames, share of clean frames wrongly dropped, below-ground counts.
Needs a prepared SynthCity tree (synthesize + downsample); it reads no model.
"""
from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:  # see benchmarks/filter.py
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from semdepth.config import load_params  # noqa: E402
from semdepth.geometry.ground import analyse_ground  # noqa: E402
from semdepth.io import read_table, resolve  # noqa: E402


def load_frames(prepared: Path) -> list[dict]:
    m = read_table(prepared / "manifest.parquet")
    m = m[(m["split"] == "train") & (m["domain"] == "target") & m["prev_image"].notna() & m["next_image"].notna()]
    if m.empty or m["depth_exact"].isna().all() or m["lead_car"].isna().all():
        raise SystemExit(f"{prepared}: needs SynthCity training triplets with exact depth and lead-car flags")
    out = []
    for r in m.sort_values("id").itertuples():
        d = np.load(resolve(r.depth_exact, prepared)).astype(np.float32)
        d = np.minimum(np.where(d > 0, d, 100.0), 100.0)
        hole = np.zeros(d.shape, bool)
        if r.lead_car and isinstance(r.moving, str):
            hole = cv2.imread(str(resolve(r.moving, prepared)), cv2.IMREAD_UNCHANGED) > 0
        road = None
        if isinstance(r.label, str):
            road = cv2.imread(str(resolve(r.label, prepared)), cv2.IMREAD_UNCHANGED) == 0
        K = np.array([[r.fx, 0, r.cx], [0, r.fy, r.cy], [0, 0, 1.0]], np.float32)
        out.append(dict(id=r.id, lead=bool(r.lead_car), depth=d, hole=hole, road=road, K=K))
    return out


def noisy(depth: np.ndarray, noise: float, blur: float, seed: int) -> np.ndarray:
    if noise <= 0:
        return depth
    f = np.random.default_rng(seed).standard_normal(depth.shape).astype(np.float32)
    if blur > 0:
        f = cv2.GaussianBlur(f, (0, 0), blur)
    return depth * np.exp(noise * f / f.std())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--margins", type=float, nargs="+", default=[0.3, 1.0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    ap.add_argument("--blur", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    p = load_params(a.params)
    frames = load_frames(a.prepared)
    lead = np.array([f["lead"] for f in frames])
    for margin in a.margins:
        cfg = dataclasses.replace(p.filter, margin=margin)
        for noise in a.noise:
            t0 = time.perf_counter()
            counts, dropped, enough = [], [], []
            for i, f in enumerate(frames):
                d = noisy(f["depth"], noise, a.blur, i)
                d = np.where(f["hole"], 100.0, d)
                road = None if f["road"] is None else torch.from_numpy(f["road"])[None]
                res = analyse_ground(torch.from_numpy(d)[None, None], torch.from_numpy(f["K"])[None], road, cfg,
                                     p.data.hood_fraction, torch.Generator().manual_seed(p.seed))
                counts.append(int(res.below_count[0]))
                dropped.append(not bool(res.kept[0]))
                enough.append(bool(res.enough_ground[0]))
            c, dr = np.array(counts), np.array(dropped)
            print(json.dumps(dict(
                bench="filter_oracle", margin=margin, noise=noise, blur=a.blur, near_range=cfg.near_range,
                frames=len(frames), lead_car_frames=int(lead.sum()), threshold=res.threshold,
                recall=float((dr & lead).sum() / max(1, lead.sum())),
                clean_wrongly_dropped=float((dr & ~lead).sum() / max(1, (~lead).sum())),
                not_enough_ground=int(len(enough) - sum(enough)),
                lead_count_min=int(c[lead].min()) if lead.any() else None,
                clean_count_p95=float(np.percentile(c[~lead], 95)) if (~lead).any() else None,
                frames_per_s=round(len(frames) / (time.perf_counter() - t0), 1),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))), flush=True)


if __name__ == "__main__":
    main()
