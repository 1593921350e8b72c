"""Paper-scale training memory estimated on CPU, for machines without a GPU: does the paper profile's
batch fit an 11 GB card, and does activation checkpointing (`compute.checkpointing`) make it fit?

Why on CPU: the GPU benchmark (benchmarks/paper_scale.py) measures `torch.cuda.max_memory_allocated`
directly, but needs a GPU. The same fp32 step on CPU allocates the same tensors (weights, gradients,
optimizer state, the activations autograd keeps, the transient recomputation of checkpointed blocks),
so the process's peak resident memory (VmHWM, fresh per process) minus its memory before the networks
were built is an estimate of what the GPU would allocate. It is an estimate, not a GPU measurement:
- the CUDA context (0.3-0.5 GB) and the caching allocator's slack come on top on a GPU;
- cuDNN workspaces are not modelled; oneDNN scratch on CPU is included;
- fp32 only (training autocasts the SDE step to bf16 on GPUs, which roughly halves activation memory).

Each measurement runs in a fresh process: build the step of benchmarks/paper_scale.py (the profile's
networks, random weights), run two steps (the second holds the first's gradients and the optimizer
state while its forward runs, as in training), report VmHWM. SDE steps run at local batch 1 and 2 and
are extrapolated linearly to the profile's `sde.batch_size` (activations grow linearly with the batch);
the finetune step runs at the profile's 2 + 2 directly.

Rows (JSON): one per process (`kind`, `batch`, `checkpointing`, `peak_gib`, `base_gib`, `alloc_gib` =
peak - base, `seconds`), then one `estimate` row per kind and checkpointing setting with the value at
the profile's batch and `fits_11gib_est`.

    python benchmarks/paper_memory.py [--size 512x512] [--threads 2] [--kinds sde_phase1 sde_phase2 finetune]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(HERE)]

GIB = 1024 ** 3
CARD_GIB = 11.0
KINDS = ("sde_phase1", "sde_phase2", "finetune")


def _status_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since exec) of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def one(kind: str, batch: int, checkpointing: bool, size: tuple[int, int], params: Path, threads: int) -> dict:
    """One measurement in this (fresh) process: build the step, run two, report peak memory."""
    import importlib.util

    import torch

    from semdepth.config import load_params
    from semdepth.runtime import set_deterministic

    spec = importlib.util.spec_from_file_location("_bench_paper_scale", HERE / "paper_scale.py")
    ps = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ps  # its dataclasses look their module up there
    spec.loader.exec_module(ps)
    set_deterministic(threads)
    p = load_params(params)
    device = torch.device("cpu")
    base = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    if kind == "finetune":
        step = ps.FinetuneBenchStep(p, device, size)
        batch_text = f"{p.finetune.batch_labeled}+{p.finetune.batch_unlabeled}"
    else:
        step = ps.SdeStep(p, 1 if kind == "sde_phase1" else 2, device, batch, size)
        batch_text = str(batch)
    step.set_variant(ps.Variant(amp=False, channels_last=False, checkpointing=checkpointing))
    built = _status_bytes("VmRSS")
    for _ in range(2):
        step()
    peak = _status_bytes("VmHWM")
    return {"bench": "paper_memory", "kind": kind, "size": f"{size[1]}x{size[0]}", "batch": batch_text,
            "encoder": f"resnet{p.sde.encoder_layers}", "architecture": p.sde.architecture,
            "checkpointing": checkpointing, "precision": "fp32", "base_gib": round(base / GIB, 3),
            "weights_gib": round((built - base) / GIB, 3), "peak_gib": round(peak / GIB, 3),
            "alloc_gib": round((peak - base) / GIB, 3), "seconds": round(time.perf_counter() - t0, 1),
            "threads": threads}


def spawn(kind: str, batch: int, checkpointing: bool, args: argparse.Namespace) -> dict:
    """`one` in a child process (VmHWM starts afresh at exec)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", kind, "--batch", str(batch),
           "--size", args.size, "--params", str(args.params), "--threads", str(args.threads)]
    if checkpointing:
        cmd.append("--checkpointing")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"paper_memory: {kind} batch {batch} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimates(rows: list[dict], sde_batch: int) -> list[dict]:
    """Per kind and checkpointing: the allocation at the profile's batch (SDE: linear in the batch)."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for ck in (False, True):
            rs = {r["batch"]: r for r in rows if r["kind"] == kind and r["checkpointing"] == ck}
            if not rs:
                continue
            if kind == "finetune":
                (batch, r), = rs.items()
                value, per_image = r["alloc_gib"], None
            else:
                a1, a2 = rs["1"]["alloc_gib"], rs["2"]["alloc_gib"]
                per_image = a2 - a1
                batch, value = str(sde_batch), a1 + (sde_batch - 1) * per_image
            out.append({"bench": "paper_memory", "kind": kind, "step": "estimate", "batch": batch,
                        "checkpointing": ck, "precision": "fp32", "alloc_gib_est": round(value, 2),
                        "per_image_gib": round(per_image, 3) if per_image is not None else None,
                        "fits_11gib_est": bool(value <= CARD_GIB)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=HERE.parent / "profiles" / "cityscapes.yaml")
    ap.add_argument("--size", default="512x512", help="WxH of the training inputs (default Hoyer's crops)")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.one:
        print(json.dumps(one(args.one, args.batch, args.checkpointing, (h, w), args.params, args.threads)), flush=True)
        return 0
    from semdepth.config import load_params

    sde_batch = load_params(args.params).sde.batch_size
    rows = []
    for kind in args.kinds:
        for ck in (False, True):
            for batch in ((1,) if kind == "finetune" else (1, 2)):
                row = spawn(kind, batch, ck, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for row in estimates(rows, sde_batch):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
