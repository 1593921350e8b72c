"""Finetune benchmarks: one JSON row per measurement (throughput, time, peak memory, ratio vs naive).

1. `step`: a full finetune step (teacher forward, DepthMix, augmentation, one student forward and
   backward, EMA) for the method's variants at the default profile's size (96x192, batch 2+2
   as Hoyer et al.), with the estimated time of the default number of steps.
2. `fused_forward`: the student's labelled, clean-mixing and mixed sub-batches through one forward
   call (what FinetuneStep does) against three separate calls (the naive way).
3. `mix_augment`: vectorised DepthMix + colour jitter + blur on a batch against a per-image loop.

Run: python -P benchmarks/finetune.py [--threads 2] [--steps 3] [--height 96 --width 192]
(-P: do not put benchmarks/ first on sys.path, where benchmarks/select.py would shadow the stdlib.)
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def batch(h: int, w: int, bl: int, bm: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b: dict[str, torch.Tensor] = {"mix_seed": torch.tensor(1)}
    K = torch.tensor([[0.58 * w, 0, w / 2], [0, 1.16 * h, h / 2], [0, 0, 1]]).float()
    for pre, n in (("l_", bl), ("m_", bm)):
        b[pre + "image"] = torch.rand(n, 3, h, w, generator=g)
        b[pre + "label"] = torch.randint(0, 19, (n, h, w), generator=g)
        b[pre + "prev"] = torch.rand(n, 3, h, w, generator=g)
        b[pre + "next"] = torch.rand(n, 3, h, w, generator=g)
        b[pre + "K"] = K.expand(n, 3, 3).clone()
        b[pre + "has_nb"] = torch.ones(n, dtype=torch.bool)
    b["m_labelled"] = torch.arange(bm) < bm // 2
    return b


def bench_steps(h: int, w: int, steps: int, bl: int, bm: int, total_steps: int) -> None:
    from semdepth.config import FinetuneConfig
    from semdepth.losses.reprojection import ObjectiveConfig
    from semdepth.models.depth_decoder import DepthDecoder
    from semdepth.models.encoder import ResnetEncoder
    from semdepth.models.depth_net import DepthNet
    from semdepth.models.segmenter import Segmenter
    from semdepth.training.finetune import FinetuneStep, build_optimizer
    from semdepth.training.mean_teacher import ema_update, make_teacher

    b = batch(h, w, bl, bm)
    for name, mix, mt in (("transfer", "none", False), ("depthmix", "depthmix", False),
                          ("multitask", "none", True), ("full", "depthmix", True)):
        cfg = FinetuneConfig(mix=mix, multitask=mt)
        torch.manual_seed(0)
        model = Segmenter(18, multitask=mt).train()
        teacher = make_teacher(model)
        teacher.pose = None
        enc = ResnetEncoder(18)
        sde = DepthNet(enc, DepthDecoder(enc.num_ch_enc)).eval() if mix == "depthmix" and not mt else None
        step = FinetuneStep(cfg, ObjectiveConfig(), sde)
        opt = build_optimizer(model, cfg)

        def one() -> None:
            loss, _ = step(model, teacher, b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema_update(teacher, model, 0.99)

        sec = timed(one, steps)
        print(json.dumps({"bench": "step", "variant": name, "size": f"{h}x{w}", "batch": f"{bl}+{bm}",
                          "threads": torch.get_num_threads(), "steps_per_s": round(1 / sec, 3),
                          "s_per_step": round(sec, 3), f"est_{total_steps}_steps_s": round(total_steps * sec, 1),
                          "peak_rss_mb": round(peak_mb(), 1)}))


def bench_fused(h: int, w: int, repeats: int) -> None:
    from semdepth.models.segmenter import Segmenter

    torch.manual_seed(0)
    model = Segmenter(18, multitask=True).train()
    parts = [torch.rand(4, 3, h, w) for _ in range(3)]

    def fused() -> None:
        out = model(torch.cat(parts))
        (out["logits"].mean() + sum(d.mean() for d in out["disp"].values())).backward()

    def naive() -> None:
        total = 0.0
        for x in parts:
            out = model(x)
            total = total + out["logits"].mean() + sum(d.mean() for d in out["disp"].values())
        total.backward()

    tf, tn = timed(fused, repeats), timed(naive, repeats)
    print(json.dumps({"bench": "fused_forward", "images": 12, "size": f"{h}x{w}", "fused_s": round(tf, 3),
                      "naive_s": round(tn, 3), "speedup_vs_naive": round(tn / tf, 2),
                      "images_per_s": round(12 / tf, 1), "peak_rss_mb": round(peak_mb(), 1)}))


def bench_mix(h: int, w: int, repeats: int) -> None:
    from semdepth.mixing.augment import strong_augment
    from semdepth.mixing.common import derangement, make_targets
    from semdepth.mixing.depthmix import depthmix

    n = 16
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, h, w, generator=g)
    probs, valid = make_targets(torch.softmax(torch.randn(n, 19, h, w, generator=g), 1))
    disp = torch.rand(n, 1, h, w, generator=g)
    perm = derangement(n, g)

    def vectorised() -> None:
        xm, _, _, _ = depthmix(x, probs, valid, disp, perm)
        strong_augment(xm, torch.Generator().manual_seed(1))

    def naive() -> None:  # one pair and one image at a time, as Hoyer's batch-of-2 code does
        for k in range(n):
            pk = perm[k:k + 1]
            idx = torch.tensor([k, int(pk)])
            xm, _, _, _ = depthmix(x[idx], probs[idx], valid[idx], disp[idx], torch.tensor([1, 0]))
            strong_augment(xm[:1], torch.Generator().manual_seed(1))

    tv, tn = timed(vectorised, repeats), timed(naive, repeats)
    print(json.dumps({"bench": "mix_augment", "images": n, "size": f"{h}x{w}", "vectorised_s": round(tv, 4),
                      "naive_s": round(tn, 4), "speedup_vs_naive": round(tn / tv, 2),
                      "images_per_s": round(n / tv, 1), "peak_rss_mb": round(peak_mb(), 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--batch-labeled", type=int, default=2)  # params.yaml finetune defaults
    ap.add_argument("--batch-unlabeled", type=int, default=2)
    ap.add_argument("--total-steps", type=int, default=800)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bench_mix(a.height, a.width, 5)
    bench_fused(a.height, a.width, a.steps)
    bench_steps(a.height, a.width, a.steps, a.batch_labeled, a.batch_unlabeled, a.total_steps)


if __name__ == "__main__":
    main()
