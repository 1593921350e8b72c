"""Benchmark of the downsample stage: frames/s with 1 worker and with all cores, and the ratio.

Prints JSON rows (one per line). Input: `--raw DIR` (a Cityscapes-layout root, e.g.
data/raw/synthcity), else data/raw/synthcity when it exists, else a generated Cityscapes-layout tree
at 256x512 (smooth textured images, label ids, camera json, uint16 disparity) in a temporary folder.

    python benchmarks/downsample.py [--raw DIR] [--snippets 24] [--height 96 --width 192]
"""
from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/select.py would shadow the stdlib `select` (imported by multiprocessing): drop this
# script's folder from the import path and put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import cv2
import numpy as np

from semdepth.data.prepare import prepare  # noqa: E402

OFFSETS = [-2, -1, 0, 1, 2]
LABEL_IDS = np.array([7, 8, 11, 17, 21, 23, 24, 26], np.uint8)


def generate_tree(root: Path, snippets: int, height: int = 256, width: int = 512, seed: int = 0) -> None:
    """A Cityscapes-layout tree whose images compress like photos (smooth + fine grain), not like noise."""
    rng = np.random.default_rng(seed)
    cam = {"extrinsic": {"baseline": 0.209313}, "intrinsic": {"fx": 2262.52 * width / 2048,
           "fy": 2265.30 * height / 1024, "u0": 1096.98 * width / 2048, "v0": 513.14 * height / 1024}}
    for i in range(snippets):
        split, city, seq = ("val", "frankfurt", i) if i % 6 == 5 else ("train", ("aachen", "bochum")[i % 2], i)
        for off in OFFSETS:
            fid = f"{city}_{seq:06d}_{19 + off:06d}"
            low = rng.uniform(0, 255, size=(height // 16, width // 16, 3)).astype(np.float32)
            img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
            img = np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)
            for kind in (["leftImg8bit"] if off == 0 else []) + ["leftImg8bit_sequence"]:
                d = root / kind / split / city
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f"{fid}_leftImg8bit.png"), img)
        aid = f"{city}_{seq:06d}_000019"
        labels = cv2.resize(rng.choice(LABEL_IDS, size=(height // 8, width // 8)), (width, height),
                            interpolation=cv2.INTER_NEAREST)
        depth = cv2.resize(rng.uniform(3, 80, size=(height // 8, width // 8)), (width, height))
        disp = (np.round(256 * cam["extrinsic"]["baseline"] * cam["intrinsic"]["fx"] / depth) + 1).astype(np.uint16)
        for kind, suffix, arr in (("gtFine", "_gtFine_labelIds.png", labels), ("disparity", "_disparity.png", disp)):
            d = root / kind / split / city
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{aid}{suffix}"), arr)
        d = root / "camera" / split / city
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{aid}_camera.json").write_text(json.dumps(cam))


def peak_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(own, 1), round(kids, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, default=None)
    ap.add_argument("--snippets", type=int, default=24, help="generated tree only")
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs per setting (noisy shared CPU)")
    args = ap.parse_args()
    os.environ.setdefault("SEMDEPTH_LOG", "WARNING")

    tmp = Path(tempfile.mkdtemp(prefix="semdepth-bench-"))
    try:
        raw = args.raw
        splits = ["train", "val"]
        if raw is None and Path("data/raw/synthcity/leftImg8bit").is_dir():
            raw = Path("data/raw/synthcity")
        if raw is None:
            raw = tmp / "raw"
            t0 = time.perf_counter()
            generate_tree(raw, args.snippets)
            source = f"generated 256x512, {args.snippets} snippets"
            print(json.dumps({"bench": "downsample", "step": "generate_tree", "seconds": round(time.perf_counter() - t0, 2)}))
        else:
            source = str(raw)
            splits = [s for s in ("train", "val", "source") if (raw / "leftImg8bit" / s).is_dir()]
        cores = os.cpu_count() or 1
        results = {}
        for workers in sorted({1, cores}):
            best = None
            for _ in range(args.repeats):
                m = prepare(raw, tmp / "prepared", args.height, args.width, OFFSETS, splits, workers)
                best = m if best is None or m["frames_per_s"] > best["frames_per_s"] else best
            own, kids = peak_mb()
            results[workers] = best
            print(json.dumps({"bench": "downsample", "input": source, "out": f"{args.height}x{args.width}",
                              "workers": best["workers"], "frames": best["frames_total"],
                              "seconds": round(best["seconds"], 3), "frames_per_s": round(best["frames_per_s"], 1),
                              "peak_rss_mb": own, "peak_rss_workers_mb": kids}))
        one = results[1]["frames_per_s"]
        print(json.dumps({"bench": "downsample", "ratio": "all_cores_vs_1_worker", "cores": cores,
                          "speedup": round(results[cores]["frames_per_s"] / one, 2) if one else None}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
