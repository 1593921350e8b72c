"""SDE training-step speed on CPU: median step time, images/s and peak memory per variant.

Settings: 416x128 batch 4 (monodepth2's KITTI size) and the default profile (128x64 batch 8). The
variants of one setting run interleaved in one process (one step of each in turn, after a warm-up
step), so load changes on a shared machine hit all of them alike:
- `naive`: identity errors recomputed per scale, one warp/SSIM pass per scale (monodepth2's loop
  structure, same networks),
- `ours`: the project's objective (full-size pose input, plain Adam): identity errors once per batch,
  all scales and sources warped and scored in one batched call, the target's SSIM moments once,
- `ours+channels_last`: the same with channels_last networks and tensors (the trainer's
  `channels_last=True`; the same maths, other kernels),
- `ours+pose_half`: the pose net on half-size inputs (`sde.pose_scale: 0.5`; other results),
- `ours+fused_adam`: Adam's fused CPU kernel (`torch.optim.Adam(fused=True)`; equal up to ~1e-9 per
  update, not bit for bit),
- `ours+pose_half+fused_adam`: both (the default profile's step: `sde.pose_scale: 0.5`, `sde.fused_adam: true`),
- `ours+all`: channels_last + pose_half + fused_adam,
- `ours+compile` (with `--compile`): torch.compile of both networks; its compile time is reported
  separately (`compile_s`) and is not in the step times.
`speedup_vs_naive` divides the naive variant's median step time by the variant's, from the same run.
`cpu_s_per_step_median` (process CPU time, all threads) is steadier than wall time under load.
`peak_rss_mb`: each variant's peak RSS, measured in a fresh process of its own (two steps; a shared
process could only report the maximum of all), and `rss_before_mb` its RSS before the first step.

`--isa avx2` caps the kernels at AVX2 (oneDNN, ATen's vectorised ops, MKL) on an AVX-512 machine: a
proxy for the AVX2-only machines this project budgets for. It shows how the kernels' instruction set
moves each variant, not the other machine's clock or caches; each row records `cpu_capability`.

    python benchmarks/sde_step.py [--steps 5] [--threads 2] [--only 416x128] [--compile] [--no-memory]
                                  [--isa avx2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Script dir first on sys.path would let a sibling benchmark named like a stdlib module (select.py)
# shadow it inside torch's imports; this script needs nothing from its own folder.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

# Instruction-set caps are read once, when torch and its libraries load, so they are set from argv here.
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--isa", choices=sorted(ISA_ENV), default=None)
os.environ.update(ISA_ENV.get(_pre.parse_known_args()[0].isa, {}))

import torch  # noqa: E402

from semdepth.config import SdeConfig  # noqa: E402
from semdepth.geometry.camera import intrinsics_matrix  # noqa: E402
from semdepth.models.sde import build_depth_net, build_pose_net  # noqa: E402
from semdepth.training.sde_trainer import objective_config, step_losses  # noqa: E402

SETTINGS = ((128, 416, 4), (64, 128, 8))  # (height, width, batch)
VARIANTS = ("naive", "ours", "ours+channels_last", "ours+pose_half", "ours+fused_adam", "ours+pose_half+fused_adam",
            "ours+all")
OPTIONS = {  # variant -> (channels_last, pose_scale, fused_adam, compile)
    "naive": (False, 1.0, False, False), "ours": (False, 1.0, False, False),
    "ours+channels_last": (True, 1.0, False, False), "ours+pose_half": (False, 0.5, False, False),
    "ours+fused_adam": (False, 1.0, True, False), "ours+pose_half+fused_adam": (False, 0.5, True, False),
    "ours+all": (True, 0.5, True, False),
    "ours+compile": (False, 1.0, False, True),
}


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


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MiB. Unlike getrusage's ru_maxrss, VmHWM starts
    afresh at exec: a child process does not inherit its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class Runner:
    """One variant's networks, optimiser and batch; `step()` returns (wall s, CPU s) of one step."""

    def __init__(self, h: int, w: int, b: int, variant: str) -> None:
        channels_last, self.pose_scale, fused, compiled = OPTIONS[variant]
        cfg = SdeConfig(batch_size=b, pose_scale=self.pose_scale)
        torch.manual_seed(0)
        self.depth, self.pose = build_depth_net(cfg), build_pose_net(cfg)
        if channels_last:
            self.depth.to(memory_format=torch.channels_last)
            self.pose.to(memory_format=torch.channels_last)
        params = list(self.depth.parameters()) + list(self.pose.parameters())
        self.opt = torch.optim.Adam(params, lr=1e-4, fused=True) if fused else torch.optim.Adam(params, lr=1e-4)
        if compiled:
            self.depth, self.pose = torch.compile(self.depth), torch.compile(self.pose)
        naive = variant == "naive"
        self.ocfg = objective_config(cfg, identity_once=not naive, batched=not naive)
        self.batch = make_batch(b, h, w, channels_last)

    def step(self) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step_losses(self.depth, self.pose, self.batch, self.ocfg, pose_scale=self.pose_scale)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0, time.process_time() - c0


def time_setting(h: int, w: int, b: int, steps: int, variants: list[str]) -> dict[str, dict]:
    """Variants interleaved step by step, so load changes on a shared machine hit all of them alike."""
    runners = {v: Runner(h, w, b, v) for v in variants}
    first = {v: r.step()[0] for v, r in runners.items()}  # warm-up (and compilation)
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(steps):
        for v, r in runners.items():
            times[v].append(r.step())
    rows = {}
    for v in variants:
        wall = [t for t, _ in times[v]]
        med = statistics.median(wall)
        rows[v] = {"bench": "sde_step", "size": f"{w}x{h}", "batch": b, "variant": v, "steps": steps,
                   "s_per_step_median": round(med, 4), "s_per_step_min": round(min(wall), 4),
                   "cpu_s_per_step_median": round(statistics.median([c for _, c in times[v]]), 4),
                   "images_per_s": round(b / med, 3), "threads": torch.get_num_threads(),
                   "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        if OPTIONS[v][3]:
            rows[v]["compile_s"] = round(first[v] - med, 1)
    return rows


def peak_memory(h: int, w: int, b: int, variant: str, threads: int) -> dict:
    """Peak RSS of `variant` alone: a fresh process builds it and runs two steps."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--only", f"{w}x{h}", "--batch", str(b),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(variant: str, h: int, w: int, b: int) -> None:
    runner = Runner(h, w, b, variant)
    before = _status_mb("VmRSS")
    for _ in range(2):
        runner.step()
    print(json.dumps({"rss_before_mb": round(before, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="one setting, e.g. 416x128 or 128x64")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(OPTIONS))
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of both networks")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory processes")
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                    help="cap the kernels' instruction set (a proxy for older CPUs; child processes inherit it)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = list(dict.fromkeys(["naive", *args.variants] + (["ours+compile"] if args.compile else [])))
    for h, w, b in SETTINGS:
        if args.only and args.only != f"{w}x{h}":
            continue
        if args.child:
            child(args.child, h, w, args.batch or b)
            return
        rows = time_setting(h, w, b, args.steps, variants)
        for v, row in rows.items():
            row["speedup_vs_naive"] = round(rows["naive"]["s_per_step_median"] / row["s_per_step_median"], 3)
            if not args.no_memory:
                row.update(peak_memory(h, w, b, v, args.threads))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
