"""Pseudo-label network throughput: inference batched vs one frame at a time, training steps/s.

Prints one JSON row per measurement (model, what, throughput, seconds, peak RSS) and the ratio of the
batched inference against the naive frame-by-frame loop. Random inputs at the working resolution;
`--e2e` adds a row for the stage's full inference path (PNG reading and writing included).

    python benchmarks/pseudolabel.py                       # defaults: ~1 minute on 2 CPU cores
    python benchmarks/pseudolabel.py --models deeplabv3_resnet34 --threads 2
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _emit(**row) -> None:
    row["peak_rss_mb"] = round(_rss_mb(), 1)
    print(json.dumps(row), flush=True)


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def bench_model(name: str, h: int, w: int, frames: int, batch: int, train_batch: int, train_steps: int) -> None:
    from semdepth.models.deeplab import DeepLab
    from semdepth.pseudolabel.infer import predict

    torch.manual_seed(0)
    model = DeepLab(name).eval()
    x = torch.rand(frames, 3, h, w)

    def batched() -> None:
        for i in range(0, frames, batch):
            predict(model, x[i:i + batch])

    def single() -> None:
        for i in range(frames):
            predict(model, x[i:i + 1])

    tb = _timed(batched, 1)
    _emit(model=name, what="inference_batched", batch=batch, frames=frames, size=f"{h}x{w}",
          frames_per_s=round(frames / tb, 2), seconds=round(tb, 3))
    ts = _timed(single, 1)
    _emit(model=name, what="inference_one_at_a_time", batch=1, frames=frames, size=f"{h}x{w}",
          frames_per_s=round(frames / ts, 2), seconds=round(ts, 3), batched_speedup=round(ts / tb, 2))

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xb = torch.rand(train_batch, 3, h, w)
    yb = torch.randint(0, 19, (train_batch, h, w))

    def step() -> None:
        loss = F.cross_entropy(model(xb), yb, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()

    tt = _timed(lambda: [step() for _ in range(train_steps)], 1) / train_steps
    _emit(model=name, what="train_step", batch=train_batch, size=f"{h}x{w}", steps_per_s=round(1 / tt, 3),
          seconds_per_step=round(tt, 3), frames_per_s=round(train_batch / tt, 2))


def bench_e2e(name: str, h: int, w: int, frames: int, batch: int) -> None:
    """The stage's own path: DataLoader reading PNGs, inference, three PNG writes per frame."""
    from semdepth.data.frames import write_png
    from semdepth.models.deeplab import DeepLab
    from semdepth.pseudolabel.infer import run_inference

    model = DeepLab(name).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        imgs = []
        for i in range(frames):
            p = root / f"f{i}.png"
            write_png(p, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            imgs.append(p)
        ids = [f"c_{i:06d}_000019" for i in range(frames)]
        res = run_inference(model, ids, ["train"] * frames, imgs, [None] * frames, root / "out",
                            [f"o/{i}" for i in ids], batch_size=batch, device=torch.device("cpu"))
    _emit(model=name, what="stage_inference_e2e", batch=batch, frames=frames, size=f"{h}x{w}",
          frames_per_s=round(frames / res.total_seconds, 2), network_frames_per_s=round(frames / res.net_seconds, 2),
          seconds=round(res.total_seconds, 3), io_share=round(1 - res.net_seconds / res.total_seconds, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="deeplabv3_mobilenet_v3_large,deeplabv3_resnet18")
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--e2e", action="store_true", help="also time the stage's inference path with PNG I/O")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name in a.models.split(","):
        bench_model(name, a.height, a.width, a.frames, a.batch, a.train_batch, a.train_steps)
        if a.e2e:
            bench_e2e(name, a.height, a.width, a.frames, a.batch)


if __name__ == "__main__":
    main()
