"""SynthCity rendering throughput: frames/s of the synthesize stage (render + write every file) with one
worker and with all cores, the screen-rectangle culling of the ray caster against the naive cast
(every part against every pixel), and what val snippets cost with every frame offset against the
annotated frame only (`synth.val_frame_offsets: [0]`; evaluation reads offset 0 alone).

    python benchmarks/synthcity.py [--height 256 --width 512 --snippets 12 --val-snippets 6]

Prints one JSON row per measurement.
"""
from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/synthcity.py` puts benchmarks/ first on sys.path; use the repo root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from semdepth.config import SynthConfig  # noqa: E402
from semdepth.data.synthcity import raycast  # noqa: E402
from semdepth.data.synthcity.camera import Intrinsics  # noqa: E402
from semdepth.data.synthcity.render import make_scene  # noqa: E402
from semdepth.data.synthcity.writer import write_dataset  # noqa: E402
from semdepth.runtime import cpu_workers  # noqa: E402


def emit(**row) -> None:
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    print(json.dumps(row), flush=True)


def dataset_rows(cfg: SynthConfig) -> None:
    base = None
    for workers in sorted({1, cpu_workers(0)}):
        with tempfile.TemporaryDirectory() as tmp:
            s = write_dataset(cfg, Path(tmp) / "synthcity", workers=workers, progress=False)
        fps = s["frames_per_second"]
        base = base or fps
        emit(bench="synthcity_write", height=cfg.height, width=cfg.width, workers=s["workers"],
             snippets=s["snippets"], frames=s["frames"], seconds=round(s["seconds"], 3),
             frames_per_s=round(fps, 2), speedup_vs_1_worker=round(fps / base, 2),
             frames_per_cpu_s=round(s["frames_per_cpu_second"], 2))


def cast_rows(cfg: SynthConfig, repeats: int = 3) -> None:
    """Ray casting alone: rectangle culling + small-part batching vs all parts over the whole image."""
    intr = Intrinsics.cityscapes(cfg.height, cfg.width)
    rays = intr.camera_rays()
    scenes = [make_scene(cfg, "train", i) for i in range(repeats)]

    def run() -> tuple[float, list]:
        t0, outs = time.perf_counter(), []
        for sc in scenes:
            outs.append(raycast.cast(sc, intr, rays, sc.traj.pose(0.0), 0.0))
        return (time.perf_counter() - t0) / len(scenes), outs

    fast, hits = run()
    real_rects, real_small = raycast._rects, raycast.SMALL
    raycast._rects = lambda intr_, *a: np.tile([0, intr_.width, 0, intr_.height], (len(a[-1]), 1))
    raycast.SMALL = -1
    try:
        naive, naive_hits = run()
    finally:
        raycast._rects, raycast.SMALL = real_rects, real_small
    # same surfaces (small parts are batched in float32, so a silhouette pixel may rarely differ)
    mismatch = float(np.mean([np.mean(a.part != b.part) for a, b in zip(hits, naive_hits)]))
    parts = int(np.mean([len(s.parts.obj) for s in scenes]))
    emit(bench="synthcity_cast", height=cfg.height, width=cfg.width, parts=parts,
         cast_ms=round(fast * 1e3, 2), naive_cast_ms=round(naive * 1e3, 2), speedup_vs_naive=round(naive / fast, 2),
         part_mismatch_fraction=round(mismatch, 6))


def val_rows(cfg: SynthConfig, snippets: int, per: tuple[int, ...] = (100, 120)) -> None:
    """Val snippets alone, one worker, rendered at every offset and at offset 0 only; CPU seconds
    (independent of machine load) and their linear extrapolation to `per` val snippets."""
    for val_offsets in (list(cfg.frame_offsets), [0]):
        run = dataclasses.replace(cfg, train_snippets=0, val_snippets=snippets, source_snippets=0,
                                  val_frame_offsets=val_offsets)
        with tempfile.TemporaryDirectory() as tmp:
            s = write_dataset(run, Path(tmp) / "synthcity", workers=1, progress=False)
        per_snippet = s["cpu_seconds"] / snippets
        emit(bench="synthcity_val", height=cfg.height, width=cfg.width, val_frame_offsets=val_offsets,
             snippets=snippets, frames=s["frames"], seconds=round(s["seconds"], 3),
             cpu_seconds=round(s["cpu_seconds"], 3), frames_per_cpu_s=round(s["frames_per_cpu_second"], 2),
             **{f"cpu_seconds_per_{n}_val_snippets": round(per_snippet * n, 1) for n in per})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--snippets", type=int, default=12, help="train+val snippets of 5 frames (no source)")
    ap.add_argument("--val-snippets", type=int, default=6, help="val snippets of the val_frame_offsets rows")
    args = ap.parse_args()
    cfg = dataclasses.replace(SynthConfig(), height=args.height, width=args.width,
                              train_snippets=max(args.snippets - 1, 1), val_snippets=1, source_snippets=0)
    dataset_rows(cfg)
    cast_rows(cfg)
    val_rows(cfg, args.val_snippets)


if __name__ == "__main__":
    main()
