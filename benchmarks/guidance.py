"""Cost of semantic guidance (docs/guidance.md): SDE training-step time and peak memory of every
`sde.guidance` option relative to `none`, inference time, and PAC against the plain convolution it
replaces (forward, forward+backward, memory; the "shift" implementation used and textbook unfold).

    python benchmarks/guidance.py [--height 96 --width 192 --batch 2 --steps 2 --threads 1] [--only sde|pac]

Memory: `saved_for_backward_mb` counts the bytes autograd keeps for the backward (unique storages,
weights excluded): exact and repeatable, so the ratio rows use it. Each SDE option also runs in its
own subprocess so that `peak_rss_mb` (ru_maxrss, which only grows within a process) belongs to that
option alone; `step_mem_mb` (peak minus the resident memory before the timed steps) is reported too
but depends on when the allocator returns memory to the system, so it is noisy.
Weights are random (speed does not depend on them); PAC's DeepLab is a random ResNet-18 DeepLabV3,
the pseudo-label stage's default. One JSON row per measurement, then ratio rows against the baseline.
"""
from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/guidance.py` puts benchmarks/ first on sys.path, where sibling scripts would
# shadow standard-library modules (benchmarks/select.py): use the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

OPTIONS = ("none", "seg_branch", "pac", "seem", "seem+attention")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class SavedTensors:
    """Bytes autograd keeps for the backward (unique storages, weights excluded), via saved-tensor
    hooks: an exact, process-independent measure of activation memory, unlike ru_maxrss."""

    def __init__(self, params=()) -> None:
        self.storages: dict[int, int] = {}
        self.exclude = {p.untyped_storage().data_ptr() for p in params}

    def __enter__(self) -> "SavedTensors":
        import torch

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in self.exclude:
                self.storages[st.data_ptr()] = st.nbytes()
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def batch_for(b: int, h: int, w: int):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    big = F.interpolate(torch.rand(b, 3, h // 8, w // 8 + 2, generator=g), size=(h, w + 8), mode="bilinear",
                        align_corners=False)
    K = torch.tensor([[0.6 * w, 0, (w - 1) / 2], [0, 0.6 * w, (h - 1) / 2], [0, 0, 1.0]]).expand(b, 3, 3).clone()
    fg = torch.zeros(b, 1, h, w)
    fg[:, :, h // 3: 2 * h // 3, w // 4: w // 2] = 1
    out = {"K": K, "inv_K": torch.linalg.inv(K), "foreground": fg}
    for o in (-1, 0, 1):
        out[f"color_{o}"] = out[f"aug_{o}"] = big[..., 4 + o: 4 + o + w].contiguous()
    return out


def run_step(args: argparse.Namespace) -> dict:
    """One guidance option: time and memory of SDE training steps and of inference (child process)."""
    import torch

    from semdepth.config import SdeConfig
    from semdepth.models.deeplab import DeepLab, checkpoint_dict
    from semdepth.models.sde import build_depth_net, build_pose_net
    from semdepth.training.sde_trainer import objective_config, step_losses

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    guidance = args.one.split("+")[0]
    cfg = dataclasses.replace(SdeConfig(), guidance=guidance, seem_attention=args.one.endswith("+attention"))
    with tempfile.TemporaryDirectory() as tmp:
        pl = Path(tmp) / "pseudolabel.pt"
        if guidance == "pac":
            torch.save(checkpoint_dict(DeepLab("deeplabv3_resnet18")), pl)
        depth = build_depth_net(cfg, None, training=True, pseudolabel_model=pl if guidance == "pac" else None,
                                pac_impl=args.pac_impl)
    pose = build_pose_net(cfg)
    params = [p for p in list(depth.parameters()) + list(pose.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    batch = batch_for(args.batch, args.height, args.width)
    ocfg = objective_config(cfg)
    depth.train(), pose.train()

    def step() -> None:
        losses = step_losses(depth, pose, batch, ocfg)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()

    step()  # warm-up (allocator, Adam state)
    with SavedTensors(list(depth.parameters()) + list(pose.parameters())) as saved:
        held = step_losses(depth, pose, batch, ocfg)
    del held
    before = rss_mb()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    step_mem = maxrss_mb() - before
    depth.eval()
    with torch.no_grad():
        x = batch["aug_0"]
        depth(x)
        t = time.perf_counter()
        for _ in range(args.steps):
            depth(x)
        infer = (time.perf_counter() - t) / args.steps
    n_train = sum(p.numel() for p in params)
    n_infer = sum(v.numel() for v in depth.inference_state_dict().values())
    return {"bench": "sde_step", "guidance": args.one, "height": args.height, "width": args.width,
            "batch": args.batch, "threads": args.threads, "step_s": round(min(times), 4),
            "step_s_median": round(sorted(times)[len(times) // 2], 4),
            "images_per_s": round(args.batch / min(times), 3), "infer_s": round(infer, 4),
            "step_mem_mb": round(step_mem, 1), "saved_for_backward_mb": round(saved.mb, 1),
            "peak_rss_mb": round(maxrss_mb(), 1),
            "trainable_params": n_train, "saved_depth_values": n_infer}


# PAC vs conv on single decoder layers at the working resolution: (level, in channels, out channels)
# of monodepth2's `upconv_{i}_1` with a ResNet-18 encoder.
PAC_LAYERS = {1: (32 + 64, 32), 2: (64 + 64, 64), 3: (128 + 128, 128)}


def run_layers(args: argparse.Namespace) -> list[dict]:
    """conv | pac_shift | pac_unfold at decoder levels 1-3 (in this process: timing + saved bytes)."""
    import torch
    import torch.nn.functional as F

    from semdepth.models.guidance.pac import GUIDE_CHANNELS, PacConv2d

    torch.set_num_threads(args.threads)
    rows = []
    for level, (cin, cout) in PAC_LAYERS.items():
        torch.manual_seed(0)
        h, w = args.height >> level, args.width >> level
        x = torch.randn(args.batch, cin, h, w, requires_grad=True)
        guide = torch.randn(args.batch, GUIDE_CHANNELS, h, w, requires_grad=True)
        base = None
        for variant in ("conv", "pac_shift", "pac_unfold"):
            pac = PacConv2d(cin, cout, 3, guide_channels=GUIDE_CHANNELS, impl=variant.split("_")[-1]
                            if variant != "conv" else "shift")

            def fwd():
                if variant == "conv":
                    return F.elu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), pac.weight, pac.bias))
                return F.elu(pac(x, guide))

            reps = max(3, args.steps * 2)
            with torch.no_grad():
                fwd()
                t = time.perf_counter()
                for _ in range(reps):
                    fwd()
                t_fwd = (time.perf_counter() - t) / reps
            with SavedTensors(list(pac.parameters())) as saved:
                y = fwd()
            y.square().mean().backward()
            t = time.perf_counter()
            for _ in range(reps):
                fwd().square().mean().backward()
            t_fb = (time.perf_counter() - t) / reps
            row = {"bench": "pac_layer", "variant": variant, "level": level, "in_ch": cin, "out_ch": cout,
                   "height": h, "width": w, "batch": args.batch, "threads": args.threads,
                   "forward_ms": round(t_fwd * 1e3, 2), "fwd_bwd_ms": round(t_fb * 1e3, 2),
                   "saved_for_backward_mb": round(saved.mb, 2), "peak_rss_mb": round(maxrss_mb(), 1)}
            rows.append(row)
            if base is None:
                base = row
            else:
                rows.append({"bench": "pac_vs_conv", "variant": variant, "level": level,
                             "forward_ratio": round(t_fwd * 1e3 / base["forward_ms"], 2),
                             "fwd_bwd_ratio": round(t_fb * 1e3 / base["fwd_bwd_ms"], 2),
                             "saved_mem_ratio": round(saved.mb / base["saved_for_backward_mb"], 2)})
    return rows


def child(args: argparse.Namespace, mode: str, one: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--one", one,
           "--height", str(args.height), "--width", str(args.width), "--batch", str(args.batch),
           "--steps", str(args.steps), "--threads", str(args.threads)]
    cmd += ["--pac-impl", args.pac_impl]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return json.loads(out[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pac-impl", choices=["shift", "unfold"], default="shift",
                    help="PAC implementation in the SDE rows")
    ap.add_argument("--only", choices=["sde", "pac"], default=None, help="run one of the two groups")
    ap.add_argument("--mode", choices=["step"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "step":
        print(json.dumps(run_step(args)), flush=True)
        return
    if args.only in (None, "sde"):
        rows = {}
        for opt in OPTIONS:
            rows[opt] = child(args, "step", opt)
            print(json.dumps(rows[opt]), flush=True)
        base = rows["none"]
        for opt in OPTIONS[1:]:
            r = rows[opt]
            print(json.dumps({"bench": "sde_step_vs_none", "guidance": opt,
                              "step_time_ratio": round(r["step_s"] / base["step_s"], 3),
                              "saved_mem_ratio": round(r["saved_for_backward_mb"] / base["saved_for_backward_mb"], 3),
                              "infer_time_ratio": round(r["infer_s"] / base["infer_s"], 3),
                              "trainable_params_ratio": round(r["trainable_params"] / base["trainable_params"], 3),
                              "saved_values_ratio": round(r["saved_depth_values"] / base["saved_depth_values"], 3)}),
                  flush=True)
    if args.only in (None, "pac"):
        for row in run_layers(args):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
