"""Pseudo-label network: throughput, and quality against time of the stage's recipe variants.

Throughput (default mode): one JSON row per measurement (model, what, throughput, seconds, peak RSS)
and the ratio of the batched inference against the naive frame-by-frame loop. Random inputs;
`--e2e` adds a row for the stage's full inference path (PNG reading and writing included).

    python benchmarks/pseudolabel.py                       # defaults: ~1 minute on 2 CPU cores
    python benchmarks/pseudolabel.py --models deeplabv3_resnet34 --threads 2

Quality against time (`--quality` / `--timing`, on a finished synthesize + downsample):

    python benchmarks/pseudolabel.py --timing r64,r96,r128,r128+bf16,r128_os8+bf16 \
        --prepared data/prepared --raw data/raw/synthcity --out /tmp/pl_bench
    python benchmarks/pseudolabel.py --quality r128+bf16,r96+bf16 --prepared ... --raw ... --out ...

`--quality` runs each variant (`VARIANTS`; `+bf16` = `pseudolabel.cpu_bf16: true`) in its own
process through the stage's own code (training on the source frames, inference on the labelled target
frames, the stage's scores and baseline) and prints one row per variant: val/train mIoU, foreground IoU,
road IoU and their baselines, train and inference wall and process CPU seconds, peak RSS. `--timing`
interleaves the variants step by step in one process (round robin, so a changing machine load hits all
alike): CPU seconds per training step and per inference frame. Why CPU time and one thread: on a shared
machine wall time measures the other users; one torch thread burns no CPU in spin-waits, so its CPU
time is the work itself, and the stage on an idle 2-core machine takes about CPU seconds / 2 (an
optimistic bound: two threads scale by ~1.7-1.9x, not 2).
"""
from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/pseudolabel.py` puts benchmarks/ first on sys.path, where sibling scripts
# (benchmarks/select.py) would shadow standard-library modules that torch imports: use the repo root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


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


# ------------------------------------------------------------------------------------------------
# quality against time
# ------------------------------------------------------------------------------------------------
#: pseudolabel.* overrides of the default profile per variant (append `+bf16` for cpu_bf16: true).
VARIANTS: dict[str, dict] = {
    "r64": {},  # today's default: 64x128 (the working resolution), stride 16, 200 steps, ce
    "r64_bal": {"loss": "balanced"},
    "r64_ohem": {"loss": "ohem"},
    "r64_s400": {"steps": 400},
    "r96": {"height": 96, "width": 192},
    "r128": {"height": 128, "width": 256},
    "r128_s300": {"height": 128, "width": 256, "steps": 300},
    "r128_os8": {"height": 128, "width": 256, "output_stride": 8},
    "r128_bal": {"height": 128, "width": 256, "loss": "balanced"},
    "r128_ohem": {"height": 128, "width": 256, "loss": "ohem"},
    "r96_os8": {"height": 96, "width": 192, "output_stride": 8},
    "r96_bal": {"height": 96, "width": 192, "loss": "balanced"},
    "r96_s300": {"height": 96, "width": 192, "steps": 300},
}


def variant_cfg(name: str, steps: int = 0):
    """The default profile's PseudolabelConfig with the variant's overrides (`steps` > 0: a smoke run)."""
    from semdepth.config import load_params

    base, _, flag = name.partition("+")
    if base not in VARIANTS or flag not in ("", "bf16"):
        raise SystemExit(f"unknown variant {name!r}: one of {', '.join(VARIANTS)} (optionally +bf16)")
    cfg = load_params(REPO / "params.yaml").pseudolabel
    cfg = replace(cfg, **VARIANTS[base], cpu_bf16=flag == "bf16")
    return replace(cfg, steps=steps) if steps else cfg


class _Data:
    """The manifest pieces every variant needs (what run_pseudolabel reads)."""

    def __init__(self, prepared: Path, raw: Path, cfg) -> None:
        from semdepth.data.manifest import labelled_source, read_manifest, target_frames
        from semdepth.pseudolabel.run import REQUIRED_COLUMNS, raw_frames

        self.root = prepared
        self.manifest = read_manifest(prepared / "manifest.parquet", REQUIRED_COLUMNS)
        self.target = target_frames(self.manifest)
        self.source = labelled_source(self.manifest)
        self.hw = (int(self.target["height"].iloc[0]), int(self.target["width"].iloc[0]))
        self.frames = raw_frames(cfg, raw, self.hw, self.target.iloc[:1])
        self.net_hw = self.hw if self.frames is None else self.frames.hw


def _cpu() -> float:
    return time.process_time()


def quality_one(name: str, prepared: Path, raw: Path, out: Path, seed: int, steps: int = 0) -> dict:
    """Train and score one variant exactly as the stage would (inference on the labelled frames only)."""
    from semdepth.pseudolabel.run import PseudolabelPaths, obtain_model, score_metrics, write_pseudolabels
    from semdepth.runtime import seed_everything, set_deterministic

    cfg = variant_cfg(name, steps)
    set_deterministic(1)
    seed_everything(seed)
    d = _Data(prepared, raw, cfg)
    work = out / name.replace("+", "_")
    cpu = torch.device("cpu")
    c0, t0 = _cpu(), time.perf_counter()
    model, training, _ = obtain_model(cfg, d.source, d.root, d.net_hw, seed=seed, device=cpu, num_workers=0,
                                      tracker=None, resume_root=work / "resume", manifest=prepared / "manifest.parquet",
                                      frames=d.frames)
    train_cpu, train_wall = _cpu() - c0, time.perf_counter() - t0
    scored = d.target[d.target["label"].notna()].reset_index(drop=True)
    paths = PseudolabelPaths(manifest=prepared / "manifest.parquet", out_dir=work / "pseudolabels",
                             table="pseudolabels.parquet", checkpoint=work / "pseudolabel.pt",
                             loss_csv=work / "loss.csv", resume_root=work / "resume")
    c0, t0 = _cpu(), time.perf_counter()
    res = write_pseudolabels(model, scored, d.root, paths, cfg, device=cpu, num_workers=0, frames=d.frames,
                             working_hw=d.hw)
    infer_cpu, infer_wall = _cpu() - c0, time.perf_counter() - t0
    m = score_metrics(res, True, scored, d.source, d.root, d.hw)
    per_frame = infer_cpu / max(1, res.frames)
    stage_cpu = train_cpu + per_frame * len(d.target)
    row = {"variant": name, "steps": cfg.steps, "resolution": f"{d.net_hw[0]}x{d.net_hw[1]}",
           "output_stride": model.output_stride, "loss": cfg.loss, "cpu_bf16": cfg.cpu_bf16,
           "train_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
           "infer_frames": res.frames, "infer_s": round(infer_wall, 1), "infer_cpu_s": round(infer_cpu, 1),
           "stage_cpu_s_all_frames": round(stage_cpu, 1), "idle_2core_stage_s": round(stage_cpu / 2, 1),
           "loss_last": training["loss_last"] if training else None}
    for sp in ("val", "train"):
        base = m["baseline"][sp]
        row.update({f"{sp}_miou": m[sp]["miou"], f"{sp}_fg_iou": m[sp]["foreground_iou"],
                    f"{sp}_road_iou": m[sp]["road_iou"], f"{sp}_baseline_miou": base["miou"],
                    f"{sp}_baseline_fg_iou": base["foreground_iou"], f"{sp}_baseline_road_iou": base["road_iou"]})
    row["val_class_iou"] = {k: None if v is None else round(v, 3) for k, v in m["val"]["class_iou"].items()}
    row["peak_rss_mb"] = round(_rss_mb(), 1)
    return row


class _StepClock:
    """A tracker whose log_metrics call (once per training step) records the CPU time of each step."""

    def __init__(self) -> None:
        self.marks = [_cpu()]

    def log_metrics(self, metrics, step=None) -> None:
        self.marks.append(_cpu())


def timing(names: list[str], prepared: Path, raw: Path, rounds: int, steps: int, frames: int) -> list[dict]:
    """Round robin over the variants: `steps` training steps (after one warm-up round) and one
    inference batch of `frames` frames per variant per round; CPU seconds per step and per frame."""
    from semdepth.models.deeplab import DeepLab, resolve_output_stride
    from semdepth.pseudolabel.infer import predict
    from semdepth.pseudolabel.run import _paths
    from semdepth.pseudolabel.train import train_deeplab

    torch.set_num_threads(1)
    setups = []
    for name in names:
        cfg = variant_cfg(name)
        d = _Data(prepared, raw, cfg)
        if d.frames is None:
            imgs, labs = _paths(d.source, "image", d.root), _paths(d.source, "label", d.root)
            batch = torch.stack([read_prepared_image(p) for p in _paths(d.target, "image", d.root)[:frames]])
        else:
            imgs, labs = d.frames.images(d.source), d.frames.labels(d.source)
            batch = torch.stack([d.frames.image(p) for p in d.frames.images(d.target.iloc[:frames])])
        torch.manual_seed(0)
        setups.append((name, cfg, d, DeepLab(cfg.model, output_stride=cfg.output_stride), imgs, labs, batch))
    per_step: dict[str, list[float]] = {n: [] for n in names}
    per_frame: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 1):  # round 0 warms up (oneDNN primitives, allocator)
        for name, cfg, d, model, imgs, labs, batch in setups:
            clock = _StepClock()
            train_deeplab(model, imgs, labs, replace(cfg, steps=steps), d.net_hw, seed=r, device=torch.device("cpu"),
                          tracker=clock, log_every=1, frames=d.frames)
            c0 = _cpu()
            predict(model, batch, d.hw, cfg.cpu_bf16)
            if r:
                per_step[name] += list(np.diff(clock.marks)[1:])  # the first step of a call builds the loader
                per_frame[name].append((_cpu() - c0) / len(batch))
    rows = []
    for name, cfg, d, *_ in setups:
        step_s, frame_s = float(np.median(per_step[name])), float(np.median(per_frame[name]))
        stage = step_s * cfg.steps + frame_s * len(d.target)
        rows.append({"variant": name, "what": "interleaved_timing", "resolution": f"{d.net_hw[0]}x{d.net_hw[1]}",
                     "output_stride": resolve_output_stride(cfg.model, cfg.output_stride),
                     "loss": cfg.loss, "cpu_bf16": cfg.cpu_bf16, "steps": cfg.steps,
                     "cpu_s_per_step": round(step_s, 3), "cpu_s_per_frame": round(frame_s, 4),
                     "train_cpu_s": round(step_s * cfg.steps, 1),
                     "infer_cpu_s_all_frames": round(frame_s * len(d.target), 1),
                     "idle_2core_stage_s": round(stage / 2, 1), "samples": len(per_step[name])})
    return rows


def read_prepared_image(path: Path) -> torch.Tensor:
    from semdepth.data.frames import read_rgb

    return read_rgb(path)


def run_quality(names: list[str], a: argparse.Namespace) -> None:
    """Each variant in its own process (clean peak RSS and CPU time), rows appended to out/rows.jsonl."""
    a.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--prepared", str(a.prepared),
               "--raw", str(a.raw), "--out", str(a.out), "--seed", str(a.seed), "--steps", str(a.steps)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode or not line:
            print(json.dumps({"variant": name, "error": res.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        with (a.out / "rows.jsonl").open("a") as f:
            f.write(line[-1] + "\n")
        print(line[-1], flush=True)


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
    ap.add_argument("--quality", help="comma-separated variants: train, infer and score each (see VARIANTS)")
    ap.add_argument("--timing", help="comma-separated variants: interleaved CPU time per step and per frame")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # one --quality variant, in a child process
    ap.add_argument("--prepared", type=Path, default=REPO / "data" / "prepared")
    ap.add_argument("--raw", type=Path, default=REPO / "data" / "raw" / "synthcity")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pl_bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="--quality: override every variant's steps (smoke runs)")
    ap.add_argument("--rounds", type=int, default=2, help="--timing: measured rounds (after one warm-up)")
    ap.add_argument("--timing-steps", type=int, default=2, help="--timing: training steps per variant per round")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(quality_one(a.one, a.prepared, a.raw, a.out, a.seed, a.steps)), flush=True)
        return
    if a.timing:
        for row in timing(a.timing.split(","), a.prepared, a.raw, a.rounds, a.timing_steps, a.frames):
            _emit(**row)
    if a.quality:
        run_quality(a.quality.split(","), a)
    if a.timing or a.quality:
        return
    for name in a.models.split(","):
        bench_model(name, a.height, a.width, a.frames, a.batch, a.train_batch, a.train_steps)
        if a.e2e:
            bench_e2e(name, a.height, a.width, a.frames, a.batch)


if __name__ == "__main__":
    main()
