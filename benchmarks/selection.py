"""Benchmark the select stage's two costs: the greedy loop vs pool size, and student training speed.

Rows (JSON, one per line):
- `greedy`: `picks` farthest-point picks (ds_us scoring, λ·E bias) from N synthetic z-scored feature
  vectors of dimension 4·8·C, with the incremental min-distance update (O(N·D) per pick), against
  the naive way that recomputes every selected frame's distance row each pick (O(|S|·N·D) per pick;
  what min over a recomputed distance block costs without the kept minima). Hoyer's full N x N matrix
  is also timed where it fits (`full_matrix_s`, N <= 2000). `same_picks` checks the two agree.
- `student`: student training steps/s at the working resolution (ResNet encoder + light decoder,
  BerHu on teacher disparity), batch `--batch`.

Defaults finish in about a minute on a 2-core CPU: python benchmarks/selection.py [--sizes 100 1000 10000]
"""
from __future__ import annotations

import os
import sys

# This file shares its name with the stdlib `select` module, which torch imports (via subprocess):
# run as a script, its own directory comes first on sys.path and would shadow it.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from semdepth.selection.distance import MinDistance, row_distances, squared_norms  # noqa: E402
from semdepth.selection.features import zscore  # noqa: E402
from semdepth.selection.greedy import farthest_point  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def naive_farthest_point(x: torch.Tensor, first: int, n_new: int, bias: torch.Tensor) -> list[int]:
    """Recompute the distances from every selected frame each pick (no kept minima)."""
    selected = [first]
    taken = torch.zeros(x.shape[0], dtype=torch.bool)
    taken[first] = True
    sq = squared_norms(x)
    for _ in range(n_new):
        mins = torch.stack([row_distances(x, i, sq) for i in selected]).min(dim=0).values
        score = mins + bias
        score[taken] = -float("inf")
        j = int(torch.argmax(score))
        selected.append(j)
        taken[j] = True
    return selected[1:]


def bench_greedy(n: int, channels: int, picks: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = zscore(torch.randn(n, 4 * 8 * channels, generator=g))  # float64 as in the stage
    bias = 1000.0 * torch.rand(n, generator=g, dtype=torch.float64) * 1e-3
    picks = min(picks, n - 1)

    t0 = time.perf_counter()
    state = MinDistance(x)
    state.add(0)
    fast = [j for j, _ in farthest_point(state, picks, bias)]
    t_inc = time.perf_counter() - t0

    t0 = time.perf_counter()
    slow = naive_farthest_point(x, 0, picks, bias)
    t_naive = time.perf_counter() - t0

    full = None
    if n <= 2000:  # Hoyer's way: the whole N x N matrix first, then min over selected rows per pick
        t0 = time.perf_counter()
        dist = torch.cdist(x, x)
        sel = [0]
        for _ in range(picks):
            score = dist[sel].min(dim=0).values + bias
            score[sel] = -float("inf")
            sel.append(int(torch.argmax(score)))
        full = time.perf_counter() - t0
    return {"bench": "greedy", "pool": n, "dim": x.shape[1], "picks": picks,
            "incremental_s": round(t_inc, 4), "naive_recompute_s": round(t_naive, 4),
            "naive_over_incremental": round(t_naive / t_inc, 2),
            "full_matrix_s": None if full is None else round(full, 4),
            "picks_per_s": round(picks / t_inc, 1), "same_picks": fast == slow,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def bench_student(height: int, width: int, batch: int, steps: int, layers: int) -> dict:
    from semdepth.selection.student import train_student

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, height, width), generator=g, dtype=torch.uint8)
    targets = torch.rand(8, 1, height, width, generator=g)
    train_student(images, targets, 1, num_layers=layers, batch_size=batch, lr=1e-4, seed=0,
                  hood_fraction=0.1, device="cpu")  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    train_student(images, targets, steps, num_layers=layers, batch_size=batch, lr=1e-4, seed=0,
                  hood_fraction=0.1, device="cpu")
    dt = time.perf_counter() - t0
    return {"bench": "student", "layers": layers, "height": height, "width": width, "batch": batch,
            "steps": steps, "time_s": round(dt, 3), "steps_per_s": round(steps / dt, 2),
            "images_per_s": round(steps * batch / dt, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--channels", type=int, default=128, help="decoder level-3 channels (SDE default: 128)")
    ap.add_argument("--picks", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layers", type=int, default=18)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for n in args.sizes:
        print(json.dumps(bench_greedy(n, args.channels, args.picks, seed=n)), flush=True)
    print(json.dumps(bench_student(args.height, args.width, args.batch, args.steps, args.layers)), flush=True)


if __name__ == "__main__":
    main()
