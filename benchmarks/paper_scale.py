"""Paper-scale step cost: the networks of profiles/cityscapes.yaml (Hoyer et al.: ResNet-101, dilated
layer4, ASPP U-Net) in one SDE step (phase 1: encoder frozen; phase 2: all trainable + feature
distance) and one finetune step (multi-task, DepthMix, mean teacher), with time, images/s and GPU
memory per variant. One JSON row per measurement, then one estimate row per variant.

On a GPU (the default when CUDA is present):
- sizes 512x512 (Hoyer's random crops of 1024x512, what the profile trains on: `sde.crop_*`,
  `finetune.crop_*`) and 1024x512 (whole frames, crops off), SDE batch `sde.batch_size` (4, global), finetune
  `finetune.batch_labeled` + `batch_unlabeled` (2 + 2, per GPU), as in the profile;
- variants: autocast on/off (bf16; fp16 on GPUs without bf16, as the SDE trainer) x channels_last
  on/off x activation checkpointing on/off
  (`compute.checkpointing`); the rows give `max_memory_allocated` (weights, Adam/SGD state and
  activations) and whether it stays within 11 GiB (`fits_11gib`: the 11 GB cards Hoyer's users
  ran out of memory on; the CUDA context and allocator slack come on top, see `max_memory_reserved`);
- the estimate rows: 300k phase-1 + 50k phase-2 SDE steps + 40k finetune steps, in hours, per variant.
  Training itself autocasts the SDE step (bf16) but runs finetune in fp32, so the matching estimate
  is the one with sde amp bf16 and finetune amp off (`as_trained: true`).
- several GPUs: `torchrun --nproc_per_node N benchmarks/paper_scale.py`; DDP as in training (the SDE
  batch is split over the GPUs, finetune batches are per GPU); times are the slowest rank's, memory
  the largest rank's, images/s over all GPUs.

`--cpu-smoke` (automatic without CUDA): one step of each kind at 128x64 (`--sizes`), ResNet-18 unless
`--layers`, SDE batch 2, fp32, checkpointing off and on; it checks the code paths, its times mean nothing.
Weights are random (ImageNet files are not needed to time a step); cuDNN is deterministic as in
training (semdepth.runtime.set_deterministic).

    python benchmarks/paper_scale.py                      # GPU: the full grid (a few minutes on one GPU)
    python benchmarks/paper_scale.py --cpu-smoke          # CPU: seconds
    torchrun --nproc_per_node 4 benchmarks/paper_scale.py
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

# Script dir first on sys.path would let a sibling benchmark named like a stdlib module (select.py)
# shadow it inside torch's imports; siblings are loaded by path below.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(HERE)]

import torch  # noqa: E402

from semdepth.config import Params, load_params  # noqa: E402
from semdepth.losses.feature_distance import FeatureDistance  # noqa: E402
from semdepth.losses.reprojection import ObjectiveConfig  # noqa: E402
from semdepth.models.checkpointing import set_checkpointing  # noqa: E402
from semdepth.models.sde import build_depth_net, build_pose_net  # noqa: E402
from semdepth.models.segmenter import Segmenter  # noqa: E402
from semdepth.runtime import set_deterministic  # noqa: E402
from semdepth.training import ddp  # noqa: E402
from semdepth.training.finetune import GRAD_CLIP, FinetuneStep, build_optimizer  # noqa: E402
from semdepth.training.mean_teacher import ema_update, make_teacher  # noqa: E402
from semdepth.training.sde_trainer import objective_config, step_losses  # noqa: E402

REPO = HERE.parent
PROFILE = REPO / "profiles" / "cityscapes.yaml"
GIB = 1024 ** 3
CARD_11GB = 11 * GIB


def _sibling(name: str) -> Any:
    """benchmarks/<name>.py as a module (its batch helpers), without benchmarks/ on sys.path."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sde_bench, finetune_bench = _sibling("sde_step"), _sibling("finetune")


def amp_dtype(device: torch.device) -> torch.dtype:
    """What the SDE trainer autocasts to on CUDA: bfloat16 where supported, else float16 (CPU: bfloat16)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass(frozen=True)
class Variant:
    amp: bool  # autocast (bf16, or fp16 on GPUs without bf16, as the SDE trainer does)
    channels_last: bool
    checkpointing: bool

    def fields(self, device: torch.device) -> dict:
        amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype(device)] if self.amp else "off"
        return {"amp": amp, "channels_last": self.channels_last, "checkpointing": self.checkpointing}


def _on_off(text: str) -> list[bool]:
    values = {"on": [True], "off": [False], "both": [False, True]}
    if text not in values:
        raise argparse.ArgumentTypeError(f"{text!r}: choose on, off or both")
    return values[text]


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


# ------------------------------------------------------------------------------------ measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reduce_max(value: float, device: torch.device) -> float:
    """The largest value over the DDP ranks (the value itself without DDP)."""
    if ddp.world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def measure(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> dict:
    """Median/min step time (slowest rank) and peak GPU memory over the measured steps."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(_reduce_max(time.perf_counter() - t0, device))
    out = {"steps": steps, "s_per_step_median": round(statistics.median(times), 4),
           "s_per_step_min": round(min(times), 4)}
    if device.type == "cuda":
        alloc = _reduce_max(torch.cuda.max_memory_allocated(device), device)
        reserved = _reduce_max(torch.cuda.max_memory_reserved(device), device)
        out.update(max_memory_allocated_gib=round(alloc / GIB, 3), max_memory_reserved_gib=round(reserved / GIB, 3),
                   fits_11gib=bool(alloc <= CARD_11GB))
    else:
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _autocast(device: torch.device, on: bool) -> Any:
    return torch.autocast(device.type, dtype=amp_dtype(device), enabled=on)


def _memory_format(model: torch.nn.Module, channels_last: bool) -> None:
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# ------------------------------------------------------------------------------------ SDE step
class SdeStep:
    """One SDE training step as SdeTrainer does it (semdepth/training/sde_trainer.py): phase 1 trains
    decoder + pose with the encoder frozen (eval mode); phase 2 everything plus the feature distance."""

    def __init__(self, p: Params, phase: int, device: torch.device, local_batch: int, hw: tuple[int, int]) -> None:
        cfg = p.sde
        torch.manual_seed(0)
        self.device, self.phase = device, phase
        self.depth = build_depth_net(cfg).to(device)
        self.pose = build_pose_net(cfg).to(device)
        self.depth.encoder.requires_grad_(phase != 1)
        self.fdist = FeatureDistance(self.depth.encoder, cfg.feature_distance).to(device) if phase == 2 else None
        params = [q for n, q in self.depth.named_parameters() if phase != 1 or not n.startswith("encoder.")]
        self.opt = torch.optim.Adam(params + list(self.pose.parameters()), lr=cfg.lr if phase == 1 else cfg.phase2_lr)
        self.ocfg = objective_config(cfg)
        self.local_batch, self.hw = local_batch, hw
        self.variant = Variant(False, False, False)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)
        self._wrap()
        self.batch = self._batch(False)

    def _wrap(self) -> None:
        """DDP-wrap (again after a memory-format change: DDP sizes its buckets at construction)."""
        self.depth_ddp, self.pose_ddp = ddp.wrap(self.depth, self.device), ddp.wrap(self.pose, self.device)

    def _batch(self, channels_last: bool) -> dict:
        b = sde_bench.make_batch(self.local_batch, self.hw[0], self.hw[1], channels_last)
        return {k: v.to(self.device) for k, v in b.items()}

    def set_variant(self, v: Variant) -> None:
        for m in (self.depth, self.pose, self.fdist):
            if m is not None:
                _memory_format(m, v.channels_last)
                set_checkpointing(m, v.checkpointing)
        if v.channels_last != self.variant.channels_last:
            self.batch = self._batch(v.channels_last)
            self._wrap()
        fp16 = v.amp and amp_dtype(self.device) == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)  # as SdeTrainer
        self.variant = v

    def __call__(self) -> None:
        self.depth.train()
        self.pose.train()
        if self.phase == 1:
            self.depth.encoder.eval()  # frozen: BatchNorm statistics too
        if self.fdist is not None:
            self.fdist.train(True)
        amp = amp_dtype(self.device) if self.variant.amp else None
        loss = step_losses(self.depth_ddp, self.pose_ddp, self.batch, self.ocfg, self.fdist, amp)["loss"]
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()


# ------------------------------------------------------------------------------------ finetune step
class FinetuneBenchStep:
    """One finetune step as semdepth/training/segmenter_run.py runs it: FinetuneStep (teacher forward,
    DepthMix, strong augmentation, one student forward of labelled + clean mixing + mixed images, the
    multi-task depth loss), backward, gradient clip, SGD, EMA update of the teacher."""

    def __init__(self, p: Params, device: torch.device, hw: tuple[int, int]) -> None:
        cfg = p.finetune
        torch.manual_seed(0)
        self.device = device
        self.model = Segmenter(p.sde.encoder_layers, multitask=cfg.multitask, pose_forward_init=p.sde.pose_forward_init,
                               architecture=p.sde.architecture).to(device).train()
        self.teacher = make_teacher(self.model)
        self.teacher.pose = None
        self.opt = build_optimizer(self.model, cfg)
        self.step_fn = FinetuneStep(cfg, ObjectiveConfig(p.sde.min_depth, p.sde.max_depth, p.sde.smoothness))
        self.student = ddp.wrap(self.model, device)
        b = finetune_bench.batch(hw[0], hw[1], cfg.batch_labeled, cfg.batch_unlabeled)
        self.base = {k: (v if k == "mix_seed" else v.to(device)) for k, v in b.items()}
        self.batch = self.base
        self.variant = Variant(False, False, False)

    def set_variant(self, v: Variant) -> None:
        for m in (self.model, self.teacher):
            _memory_format(m, v.channels_last)
            set_checkpointing(m, v.checkpointing)
        fmt = torch.channels_last if v.channels_last else torch.contiguous_format
        self.batch = {k: (t.contiguous(memory_format=fmt) if isinstance(t, torch.Tensor) and t.dim() == 4 else t)
                      for k, t in self.base.items()}
        if v.channels_last != self.variant.channels_last:
            self.student = ddp.wrap(self.model, self.device)  # DDP sizes its buckets at construction
        self.variant = v

    def __call__(self) -> None:
        with _autocast(self.device, self.variant.amp):
            loss, _ = self.step_fn(self.student, self.teacher, self.batch)
        self.opt.zero_grad(set_to_none=True)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.opt.step()
        ema_update(self.teacher, self.model, 0.99)


# ------------------------------------------------------------------------------------ driver
def _base_row(p: Params, device: torch.device, hw: tuple[int, int]) -> dict:
    return {"bench": "paper_scale", "device": device.type, "gpus": ddp.world()[1] if device.type == "cuda" else 0,
            "size": f"{hw[1]}x{hw[0]}", "encoder": f"resnet{p.sde.encoder_layers}", "architecture": p.sde.architecture}


def run_size(p: Params, device: torch.device, hw: tuple[int, int], variants: list[Variant], steps: int,
             warmup: int, emit: Callable[[dict], None]) -> dict[tuple[str, Variant], float]:
    """Every step kind and variant at one size; returns {(kind, variant): median s/step}."""
    world = ddp.world()[1]
    sde_batch = p.sde.batch_size
    if sde_batch % world:
        raise SystemExit(f"sde.batch_size {sde_batch} does not split over {world} processes")
    times: dict[tuple[str, Variant], float] = {}
    kinds: list[tuple[str, Callable[[], Any], int, str]] = [
        ("sde_phase1", lambda: SdeStep(p, 1, device, sde_batch // world, hw), sde_batch, str(sde_batch)),
        ("sde_phase2", lambda: SdeStep(p, 2, device, sde_batch // world, hw), sde_batch, str(sde_batch)),
        ("finetune", lambda: FinetuneBenchStep(p, device, hw),
         (p.finetune.batch_labeled + p.finetune.batch_unlabeled) * world,
         f"{p.finetune.batch_labeled}+{p.finetune.batch_unlabeled}"),
    ]
    for kind, build, images, batch_text in kinds:
        runner = build()
        for v in variants:
            runner.set_variant(v)
            row = {**_base_row(p, device, hw), "step": kind, "batch": batch_text, **v.fields(device),
                   **measure(runner, device, steps, warmup)}
            row["images_per_s"] = round(images / row["s_per_step_median"], 3)
            times[(kind, v)] = row["s_per_step_median"]
            emit(row)
        del runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return times


def estimate_rows(p: Params, device: torch.device, hw: tuple[int, int], times: dict[tuple[str, Variant], float],
                  variants: list[Variant]) -> list[dict]:
    """Wall-clock of the profile's schedule: phase1_steps + (steps - phase1_steps) SDE steps and
    finetune.steps, for each SDE variant combined with each finetune variant of the same memory
    layout and checkpointing (the amp setting may differ: training autocasts the SDE only)."""
    phase1 = p.sde.phase1_steps
    phase2 = p.sde.steps - phase1
    rows = []
    for sv, fv in itertools.product(variants, variants):
        if (sv.channels_last, sv.checkpointing) != (fv.channels_last, fv.checkpointing):
            continue
        sde_s = phase1 * times[("sde_phase1", sv)] + phase2 * times[("sde_phase2", sv)]
        ft_s = p.finetune.steps * times[("finetune", fv)]
        rows.append({**_base_row(p, device, hw), "step": "estimate", "sde_amp": sv.fields(device)["amp"],
                     "finetune_amp": fv.fields(device)["amp"], "channels_last": sv.channels_last,
                     "checkpointing": sv.checkpointing, "as_trained": sv.amp and not fv.amp,
                     "sde_steps": f"{phase1}+{phase2}", "finetune_steps": p.finetune.steps,
                     "sde_hours": round(sde_s / 3600, 2), "finetune_hours": round(ft_s / 3600, 2),
                     "total_hours": round((sde_s + ft_s) / 3600, 2)})
    return rows


def smoke_params(p: Params, layers: int | None) -> Params:
    """The profile shrunk for a CPU check: the same architecture and options, ResNet-18, SDE batch 2."""
    return replace(p, sde=replace(p.sde, encoder_layers=layers or 18, batch_size=2))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=PROFILE, help="params file (default profiles/cityscapes.yaml)")
    ap.add_argument("--cpu-smoke", action="store_true", help="one small step of each kind on CPU")
    ap.add_argument("--sizes", default=None, help="WxH list (GPU default 512x512,1024x512; smoke 128x64)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per variant (GPU 10, smoke 1)")
    ap.add_argument("--warmup", type=int, default=None, help="unmeasured steps first (GPU 3, smoke 0)")
    ap.add_argument("--amp", type=_on_off, default=None, help="autocast: on, off, both (GPU default both)")
    ap.add_argument("--channels-last", type=_on_off, default=None, help="on, off, both (GPU default both)")
    ap.add_argument("--checkpointing", type=_on_off, default=None, help="on, off, both (default both)")
    ap.add_argument("--layers", type=int, default=None, help="override sde.encoder_layers")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    args = ap.parse_args(argv)

    p = load_params(args.params)
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    set_deterministic(args.threads)
    device = ddp.init(torch.device("cpu" if smoke else "cuda"))
    if smoke:
        p = smoke_params(p, args.layers)
        sizes = [_size(s) for s in (args.sizes or "128x64").split(",")]
        steps, warmup = args.steps or 1, args.warmup or 0
        amp, cl = args.amp or [False], args.channels_last or [False]
    else:
        if args.layers:
            p = replace(p, sde=replace(p.sde, encoder_layers=args.layers))
        sizes, steps = [_size(s) for s in (args.sizes or "512x512,1024x512").split(",")], args.steps or 10
        warmup = 3 if args.warmup is None else args.warmup
        amp, cl = args.amp or [True, False], args.channels_last or [False, True]
    ckpt = args.checkpointing or [False, True]
    variants = [Variant(a, c, k) for a, c, k in itertools.product(amp, cl, ckpt)]
    rank0 = ddp.world()[0] == 0
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        if rank0:
            print(json.dumps(row), flush=True)

    for hw in sizes:
        times = run_size(p, device, hw, variants, steps, warmup, emit)
        for row in estimate_rows(p, device, hw, times, variants):
            emit(row)
    ddp.barrier()
    ddp.shutdown()
    return rows


if __name__ == "__main__":
    main()
