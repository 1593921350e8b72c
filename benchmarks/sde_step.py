"""SDE training-step speed: median step time, images/s and peak RSS on CPU.

Variants run interleaved (one step of each in turn). Rows (JSON, one per line): settings 416x128 batch 4 (where monodepth2's own step takes ~1.7 s on
this 2-core machine, reference/sde_anchors.md) and the default profile (96x192 batch 8), each for:
- `naive`: the identity errors recomputed per scale and one warp/SSIM pass per scale (monodepth2's
  loop structure, same networks),
- `ours`: identity errors once per batch, all scales and sources warped and scored in one batched call,
- `ours+channels_last`: the same with channels_last tensors.
Ratios: speedup vs naive and vs monodepth2's measured 1.7 s/step (416x128 only). The machine is shared:
`cpu_s_per_step_median` (process CPU time, all threads) is steadier than wall time under load.

    python benchmarks/sde_step.py [--steps 5] [--threads 2] [--only 416x128]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

# Script dir first on sys.path would let a sibling benchmark named like a stdlib module (select.py)
# shadow it inside torch's imports; this script needs nothing from its own folder.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import torch

from semdepth.config import SdeConfig
from semdepth.geometry.camera import intrinsics_matrix
from semdepth.models.sde import build_depth_net, build_pose_net
from semdepth.training.sde_trainer import objective_config, step_losses

MONODEPTH2_416x128_B4_S = 1.7  # median s/step of monodepth2's own code here (sde_anchors.md)


def make_batch(b: int, h: int, w: int, channels_last: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(b, 3, h // 4, w // 4, generator=g), size=(h, w),
                                           mode="bilinear", align_corners=False)
    batch = {}
    for o, shift in ((-1, -2), (0, 0), (1, 2)):
        img = torch.roll(base, shift, dims=-1)
        batch[f"color_{o}"] = img
        batch[f"aug_{o}"] = img.clone()
    K = intrinsics_matrix(0.58 * w, 1.92 * h, (w - 1) / 2, (h - 1) / 2).expand(b, 3, 3).contiguous()
    batch["K"], batch["inv_K"] = K, torch.linalg.inv(K)
    if channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
    return batch


class Runner:
    """One variant's networks, optimiser and batch; `step()` returns (wall s, CPU s) of one step."""

    def __init__(self, h: int, w: int, b: int, variant: str) -> None:
        cfg = SdeConfig(batch_size=b)
        torch.manual_seed(0)
        self.depth, self.pose = build_depth_net(cfg), build_pose_net(cfg)
        cl = variant.endswith("channels_last")
        if cl:
            self.depth.to(memory_format=torch.channels_last)
            self.pose.to(memory_format=torch.channels_last)
        naive = variant == "naive"
        self.ocfg = objective_config(cfg, identity_once=not naive, batched=not naive)
        self.opt = torch.optim.Adam(list(self.depth.parameters()) + list(self.pose.parameters()), lr=1e-4)
        self.batch = make_batch(b, h, w, cl)

    def step(self) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step_losses(self.depth, self.pose, self.batch, self.ocfg)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0, time.process_time() - c0


VARIANTS = ("naive", "ours", "ours+channels_last")


def time_setting(h: int, w: int, b: int, steps: int) -> dict[str, dict]:
    """Variants interleaved step by step, so load changes on a shared machine hit all of them alike."""
    runners = {v: Runner(h, w, b, v) for v in VARIANTS}
    for r in runners.values():
        r.step()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for _ in range(steps):
        for v, r in runners.items():
            times[v].append(r.step())
    rows = {}
    for v in VARIANTS:
        wall = [t for t, _ in times[v]]
        med = statistics.median(wall)
        rows[v] = {"bench": "sde_step", "size": f"{w}x{h}", "batch": b, "variant": v, "steps": steps,
                   "s_per_step_median": round(med, 4), "s_per_step_min": round(min(wall), 4),
                   "cpu_s_per_step_median": round(statistics.median([c for _, c in times[v]]), 4),
                   "images_per_s": round(b / med, 3), "threads": torch.get_num_threads()}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="one setting, e.g. 416x128 or 192x96")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = [(128, 416, 4), (96, 192, 8)]
    for h, w, b in settings:
        if args.only and args.only != f"{w}x{h}":
            continue
        rows = time_setting(h, w, b, args.steps)
        for v, row in rows.items():
            row["speedup_vs_naive"] = round(rows["naive"]["s_per_step_median"] / row["s_per_step_median"], 3)
            if (w, h, b) == (416, 128, 4):
                row["speedup_vs_monodepth2"] = round(MONODEPTH2_416x128_B4_S / row["s_per_step_median"], 3)
            row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
