"""finetune stage: semi-supervised segmentation with SDE transfer, multi-task learning, DepthMix and a
mean teacher (METHOD.md §6; Hoyer et al. 2021 §3-4).

Frames (data/prepared/manifest.parquet, target domain, train split):
- labelled: the first `select.n_labels` rows by rank of data/selection/selection.parquet, with GT;
- unlabelled: every other train frame (annotated and sequence frames); their GT is never read;
- mixing pool: labelled ∪ unlabelled; frames with both neighbours also feed the multi-task depth loss;
- validation (for the summary only): annotated val frames.

Init (`finetune.init`): sde (data/models/sde_stage2.pt), scratch, source (data/models/pseudolabel.pt
backbone), imagenet (torchvision's file in torch's cache directory; never downloaded).

Writes data/models/segmenter.pt, metrics/finetune.json, metrics/plots/finetune_loss.csv.
Resumable: a killed run restarts from its last checkpoint (semdepth/training/resume.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from semdepth import SemdepthError
from semdepth.io import read_table
from stages._common import PLOTS_DIR, is_rank0, stage

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.parquet"
SELECTION = Path("data/selection/selection.parquet")
SDE_MODEL = Path("data/models/sde_stage2.pt")
SOURCE_MODEL = Path("data/models/pseudolabel.pt")
OUT_MODEL = Path("data/models/segmenter.pt")
LOSS_CSV = PLOTS_DIR / "finetune_loss.csv"


def split_frames(manifest: "pd.DataFrame", selection: "pd.DataFrame", n_labels: int  # noqa: F821
                 ) -> tuple["pd.DataFrame", "pd.DataFrame", "pd.DataFrame"]:  # noqa: F821
    """(labelled, unlabelled, val) manifest rows; labelled in selection-rank order."""
    m = manifest
    train = m[(m["split"] == "train") & (m["domain"] == "target")]
    if len(selection) < n_labels:
        raise SemdepthError(f"{SELECTION}: has {len(selection)} frames but select.n_labels is {n_labels}; "
                            f"rerun select")
    chosen = selection.sort_values("rank")["id"].head(n_labels).tolist()
    by_id = train.set_index("id")
    missing = [i for i in chosen if i not in by_id.index]
    if missing:
        raise SemdepthError(f"{SELECTION}: {len(missing)} selected frames are not target-domain train frames of "
                            f"{MANIFEST} (e.g. {missing[0]}); rerun select")
    labelled = by_id.loc[chosen].reset_index()
    unlabelled_ids = [i for i in by_id.index if i not in set(chosen)]
    nolabel = labelled[labelled["label"].isna()]["id"].tolist()
    if nolabel:
        raise SemdepthError(f"{MANIFEST}: selected frame {nolabel[0]} has no label; select must choose annotated frames")
    unlabelled = by_id.loc[sorted(unlabelled_ids)].reset_index()
    val = m[(m["split"] == "val") & (m["domain"] == "target") & m["label"].notna()].sort_values("id")
    return labelled, unlabelled, val.reset_index(drop=True)


def load_val(val: "pd.DataFrame") -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    import torch

    from semdepth.data.frames import read_label, read_rgb
    from semdepth.io import resolve

    if not len(val):
        return torch.empty(0, 3, 1, 1), torch.empty(0, 1, 1, dtype=torch.long)
    imgs = torch.stack([read_rgb(resolve(p, PREPARED)) for p in val["image"]])
    labs = torch.stack([read_label(resolve(p, PREPARED)) for p in val["label"]])
    return imgs, labs


def val_miou(model, images, labels, device, batch_size: int = 16) -> dict[str, Any]:
    from semdepth.data.labels import NUM_CLASSES
    from semdepth.metrics.segmentation import ConfusionMatrix
    from semdepth.training.finetune import predict_labels

    if not len(images):
        return {}
    was_training = model.training
    model.eval()
    pred = predict_labels(model, images.to(device), batch_size).cpu()
    model.train(was_training)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(pred, labels)
    return {"miou": cm.miou("gt"), "miou_cityscapes": cm.miou("union"), "pixel_accuracy": cm.pixel_accuracy()}


def main(params_path: str | Path = "params.yaml") -> None:
    import torch
    from torch.utils.data import DataLoader

    from semdepth.config import to_dict
    from semdepth.losses.reprojection import ObjectiveConfig
    from semdepth.models.sde import load_sde, read_sde
    from semdepth.models.segmenter import build_segmenter, save_segmenter
    from semdepth.progress import bar
    from semdepth.training import ddp
    from semdepth.training.finetune import GRAD_CLIP, FinetuneStep, build_optimizer, lr_factor, set_lr
    from semdepth.training.finetune_data import FramePool, StepBatches
    from semdepth.training.guards import check_finite
    from semdepth.training.loss_log import LossLog
    from semdepth.training.mean_teacher import ema_alpha, ema_update, make_teacher
    from semdepth.training.resume import Resumer, rng_state, set_rng_state

    with stage("finetune", params_path, ["finetune", "select", "sde"]) as ctx:
        p, cfg = ctx.params, ctx.params.finetune
        device = ddp.init(ctx.device)
        rank, world = ddp.world()
        log = ctx.log
        started = time.perf_counter()

        manifest = read_table(MANIFEST)
        labelled, unlabelled, val = split_frames(manifest, read_table(SELECTION), p.select.n_labels)
        sde_ck = read_sde(SDE_MODEL)
        sde_cfg = dict(sde_ck["config"])
        if int(sde_cfg["encoder_layers"]) != p.sde.encoder_layers:
            raise SemdepthError(f"{SDE_MODEL}: encoder is ResNet-{sde_cfg['encoder_layers']} but sde.encoder_layers "
                                f"is {p.sde.encoder_layers}; rerun retrain")
        model, transfer = build_segmenter(cfg.init, p.sde.encoder_layers, cfg.multitask,
                                          float(sde_cfg.get("pose_forward_init", 0.0)), sde_ckpt=sde_ck,
                                          source_path=SOURCE_MODEL)
        log.info("labelled %d, unlabelled %d, val %d frames; init %s (%s)", len(labelled), len(unlabelled),
                 len(val), cfg.init, transfer)
        model.to(device).train()

        sde_net = None
        if cfg.mix == "depthmix" and not cfg.multitask:
            sde_net, _, _ = load_sde(SDE_MODEL, device)
            for q in sde_net.parameters():
                q.requires_grad_(False)

        lab_pool = FramePool.from_rows(labelled, PREPARED, use_labels=True)
        mix_pool = FramePool.concat([lab_pool, FramePool.from_rows(unlabelled, PREPARED, use_labels=False)])
        teacher = make_teacher(model)
        teacher.pose = None  # the teacher never estimates pose (Hoyer excludes it from the EMA)
        opt = build_optimizer(model, cfg)

        key = {"finetune": to_dict(cfg), "n_labels": p.select.n_labels, "seed": p.seed, "world": world,
               "sde": {k: getattr(p.sde, k) for k in ("encoder_layers", "min_depth", "max_depth", "smoothness")}}
        resumer = Resumer("finetune", key)
        losses = LossLog()
        start = 0
        state = resumer.load()
        if state is not None:
            model.load_state_dict(state["model"])
            teacher.load_state_dict(state["teacher"])
            opt.load_state_dict(state["optimizer"])
            losses.load(state["losses"])
            set_rng_state(state["rng"])
            start = int(state["step"])
            log.info("resuming finetune at step %d", start)
        student = ddp.wrap(model, device)

        data = StepBatches(lab_pool, mix_pool, cfg.batch_labeled, cfg.batch_unlabeled, p.seed * 1000 + rank,
                           cfg.steps, start, neighbours=cfg.multitask, with_mixing=cfg.mix != "none")
        workers = p.compute.num_workers
        # Own generator: creating the iterator must not draw from the global RNG (resume determinism).
        loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                            prefetch_factor=2 if workers else None, generator=torch.Generator().manual_seed(p.seed))
        step_fn = FinetuneStep(cfg, ObjectiveConfig(p.sde.min_depth, p.sde.max_depth, p.sde.smoothness), sde_net)
        val_images, val_labels = load_val(val)

        with bar("finetune", cfg.steps, start) as b:
            for batch in loader:
                step = int(batch["step"])
                batch = {k: (v.to(device, non_blocking=True) if k not in ("step", "mix_seed") else v)
                         for k, v in batch.items()}
                set_lr(opt, lr_factor(step, cfg.steps, cfg.lr_decay_at))
                loss, parts = step_fn(student, teacher, batch)
                check_finite(loss, step, "finetune")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                opt.step()
                ema_update(teacher, model, ema_alpha(step, cfg.ema_alpha))
                losses.add(step, ctx.tracker if is_rank0() else None, lr=opt.param_groups[1]["lr"], **parts)
                b.update(**{k: parts[k] for k in ("loss", "sup") if k in parts})
                done = step + 1
                if done % cfg.checkpoint_every == 0 and done < cfg.steps and is_rank0():
                    resumer.save({"step": done, "model": model.state_dict(), "teacher": teacher.state_dict(),
                                  "optimizer": opt.state_dict(), "losses": losses.rows, "rng": rng_state()})
                    losses.write(LOSS_CSV)

        if is_rank0():
            student_val = val_miou(model, val_images, val_labels, device)
            teacher_val = val_miou(teacher, val_images, val_labels, device)
            meta = {"labelled_ids": labelled["id"].tolist(), "transfer": transfer, "steps": cfg.steps,
                    "val_miou": student_val.get("miou")}
            save_segmenter(OUT_MODEL, model, to_dict(cfg), sde_cfg, meta)
            losses.write(LOSS_CSV)
            summary = {k: losses.summary(k) for k in ("loss", "sup", "unsup", "unsup_raw", "conf_weight", "depth")
                       if losses.summary(k)}
            ctx.write_metrics({
                "train": summary,
                "val": {"student": student_val, "teacher": teacher_val},
                "val_miou": student_val.get("miou"),
                "frames": {"labelled": len(labelled), "unlabelled": len(unlabelled), "val": len(val)},
                "init": cfg.init, "multitask": cfg.multitask, "mix": cfg.mix, "steps": cfg.steps,
                "time_s": time.perf_counter() - started,
            })
            ctx.tracker.log_artifact(LOSS_CSV)
            resumer.done()
            log.info("finetune: val mIoU %.4f (teacher %.4f) in %.0f s", student_val.get("miou", float("nan")),
                     teacher_val.get("miou", float("nan")), time.perf_counter() - started)
        ddp.barrier()
        ddp.shutdown()
