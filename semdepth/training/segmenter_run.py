"""finetune as library calls: its frames, the resumable training run, validation and outputs.

The files come in a `FinetunePaths` the stage builds from semdepth/layout.py.

Frames (the manifest's target domain, train split):
- labelled: the first `select.n_labels` rows by rank of the selection table, with GT;
- unlabelled: every other train frame (annotated and sequence frames); their GT is never read;
- mixing pool: labelled ∪ unlabelled; frames with both neighbours also feed the multi-task depth loss;
- validation (for the summary only): labelled target-domain val frames.

Init (`finetune.init`): sde (the stage-2 SDE), scratch, source (the pseudolabel stage's DeepLab
backbone), imagenet (torchvision's file in torch's cache directory; never downloaded).

`train_segmenter` runs on every DDP rank and is resumable through the shared loop
(semdepth.training.loop); `write_outputs` (rank 0) validates student and teacher and writes
the segmenter checkpoint and the loss curve. One step is `semdepth.training.finetune.FinetuneStep`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from semdepth import SemdepthError
from semdepth.config import to_dict
from semdepth.data.crop import crop_size
from semdepth.data.frames import read_label, read_rgb
from semdepth.data.labels import NUM_CLASSES
from semdepth.data.manifest import labelled_val, read_manifest, target_train
from semdepth.io import read_table, resolve
from semdepth.losses.reprojection import ObjectiveConfig
from semdepth.metrics.segmentation import ConfusionMatrix
from semdepth.models.checkpointing import set_checkpointing
from semdepth.models.sde import load_sde, read_sde
from semdepth.models.segmenter import build_segmenter, save_segmenter
from semdepth.runtime import get_logger
from semdepth.training import ddp, loop
from semdepth.training.finetune import GRAD_CLIP, FinetuneStep, build_optimizer, lr_factor, predict_labels, set_lr
from semdepth.training.finetune_data import FramePool, StepBatches
from semdepth.training.loop import TrainResult
from semdepth.training.loss_log import LossLog
from semdepth.training.mean_teacher import ema_alpha, ema_update, make_teacher
from semdepth.training.resume import Resumer

log = get_logger("semdepth.finetune")

SUMMARY_KEYS = ("loss", "sup", "unsup", "unsup_raw", "conf_weight", "depth")


@dataclass(frozen=True)
class FinetunePaths:
    """The files finetune reads and writes."""

    manifest: Path  # the prepared frames; stored image and label paths are relative to its directory
    selection: Path  # the select stage's ranked frames
    sde_model: Path  # the stage-2 SDE: `sde` init and DepthMix's depth; sets the encoder depth
    pseudolabel_model: Path  # `source` init
    out_model: Path  # the segmenter checkpoint
    loss_csv: Path  # its loss curve
    resume_root: Path  # resumable checkpoints of a killed run


def split_frames(manifest: pd.DataFrame, selection: pd.DataFrame, n_labels: int, labels: str,
                 paths: FinetunePaths) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(labelled, unlabelled, val) manifest rows; labelled in selection-rank order. `paths` names the
    files the tables came from in error messages.

    labels "all" is the supervised ceiling (the oracle): every train frame with a label is labelled,
    sorted by id, and the selection is not read.
    """
    train = target_train(manifest)
    if labels == "all":
        has = train["label"].notna()
        labelled = train[has].sort_values("id").reset_index(drop=True)
        unlabelled = train[~has].sort_values("id").reset_index(drop=True)
        if labelled.empty:
            raise SemdepthError(f"{paths.manifest}: finetune.labels all: no target-domain train frame has a label")
        return labelled, unlabelled, labelled_val(manifest)
    if len(selection) < n_labels:
        raise SemdepthError(f"{paths.selection}: has {len(selection)} frames but select.n_labels is {n_labels}; "
                            f"rerun select")
    chosen = selection.sort_values("rank")["id"].head(n_labels).tolist()
    by_id = train.set_index("id")
    missing = [i for i in chosen if i not in by_id.index]
    if missing:
        raise SemdepthError(f"{paths.selection}: {len(missing)} selected frames are not target-domain train frames of "
                            f"{paths.manifest} (e.g. {missing[0]}); rerun select")
    labelled = by_id.loc[chosen].reset_index()
    unlabelled_ids = [i for i in by_id.index if i not in set(chosen)]
    nolabel = labelled[labelled["label"].isna()]["id"].tolist()
    if nolabel:
        raise SemdepthError(f"{paths.manifest}: selected frame {nolabel[0]} has no label; "
                            f"select must choose annotated frames")
    unlabelled = by_id.loc[sorted(unlabelled_ids)].reset_index()
    return labelled, unlabelled, labelled_val(manifest)


def load_val(val: pd.DataFrame, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N,3,H,W] and train-id labels [N,H,W] of the val rows (paths relative to `root`; empty
    tensors for no rows)."""
    if not len(val):
        return torch.empty(0, 3, 1, 1), torch.empty(0, 1, 1, dtype=torch.long)
    imgs = torch.stack([read_rgb(resolve(p, root)) for p in val["image"]])
    labs = torch.stack([read_label(resolve(p, root)) for p in val["label"]])
    return imgs, labs


def val_miou(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
             batch_size: int = 16) -> dict[str, Any]:
    """mIoU (classes in GT, and Cityscapes' union convention) and pixel accuracy; {} without val frames.
    The model's train/eval mode is restored afterwards."""
    if not len(images):
        return {}
    was_training = model.training
    model.eval()
    pred = predict_labels(model, images.to(device), batch_size).cpu()
    model.train(was_training)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(pred, labels)
    return {"miou": cm.miou("gt"), "miou_cityscapes": cm.miou("union"), "pixel_accuracy": cm.pixel_accuracy()}


@dataclass
class FinetuneRun:
    """A finished training run: the models, its frames and what `write_outputs` needs."""

    model: nn.Module  # the student (not DDP-wrapped)
    teacher: nn.Module
    result: TrainResult
    labelled: pd.DataFrame
    unlabelled: pd.DataFrame
    val: pd.DataFrame
    transfer: dict[str, str]
    config: Any  # FinetuneConfig
    sde_config: dict
    device: torch.device
    resumer: Resumer
    paths: FinetunePaths


def resume_key(p: Any, world: int) -> dict:
    """What defines the result (the resume directory is keyed by it): changed params start fresh."""
    return {"finetune": to_dict(p.finetune), "n_labels": p.select.n_labels, "seed": p.finetune.seed, "world": world,
            "sde": {k: getattr(p.sde, k) for k in ("encoder_layers", "min_depth", "max_depth", "smoothness")}}


def train_segmenter(p: Any, paths: FinetunePaths, device: torch.device, *, tracker: Any = None,
                    interrupt_at: int | None = None) -> FinetuneRun:
    """Build the segmenter from `finetune.init`, (resume from `paths.resume_root` and) train it
    `finetune.steps` steps.

    `p` holds finetune, select.n_labels, sde.{encoder_layers,min_depth,max_depth,smoothness} and
    compute.*. `finetune.seed` seeds the data order here and, through the stage, the global RNGs;
    global RNG draws (network init) happen in a fixed order, so the same seed gives the same weights.
    `interrupt_at` raises KeyboardInterrupt after that step.
    """
    cfg = p.finetune
    device = ddp.init(device)
    rank, world = ddp.world()
    labelled, unlabelled, val = split_frames(read_manifest(paths.manifest), read_table(paths.selection),
                                             p.select.n_labels, cfg.labels, paths)
    sde_ck = read_sde(paths.sde_model)
    sde_cfg = dict(sde_ck["config"])
    if int(sde_cfg["encoder_layers"]) != p.sde.encoder_layers:
        raise SemdepthError(f"{paths.sde_model}: encoder is ResNet-{sde_cfg['encoder_layers']} but sde.encoder_layers "
                            f"is {p.sde.encoder_layers}; rerun retrain")
    model, transfer = build_segmenter(cfg.init, p.sde.encoder_layers, cfg.multitask,
                                      float(sde_cfg.get("pose_forward_init", 0.0)), sde_ckpt=sde_ck,
                                      source_path=paths.pseudolabel_model)
    log.info("labelled %d, unlabelled %d, val %d frames; init %s (%s)", len(labelled), len(unlabelled),
             len(val), cfg.init, transfer)
    set_checkpointing(model, p.compute.checkpointing)  # memory only: the same result either way
    model.to(device).train()
    sde_net = None
    if cfg.mix == "depthmix" and not cfg.multitask:
        sde_net, _, _ = load_sde(paths.sde_model, device)
        sde_net.requires_grad_(False)
    root = paths.manifest.parent
    lab_pool = FramePool.from_rows(labelled, root, use_labels=True)
    mix_pool = FramePool.concat([lab_pool, FramePool.from_rows(unlabelled, root, use_labels=False)])
    teacher = make_teacher(model)
    teacher.pose = None  # the teacher never estimates pose (Hoyer excludes it from the EMA)
    opt = build_optimizer(model, cfg)

    def state() -> dict:
        return {"model": model.state_dict(), "teacher": teacher.state_dict(), "optimizer": opt.state_dict()}

    def load(saved: dict) -> None:
        model.load_state_dict(saved["model"])
        teacher.load_state_dict(saved["teacher"])
        opt.load_state_dict(saved["optimizer"])

    resumer = Resumer("finetune", resume_key(p, world), paths.resume_root)
    checkpoints = loop.Checkpoints(resumer, cfg.checkpoint_every, state, load, loss_csv=paths.loss_csv)
    losses = LossLog()
    start = loop.resume(checkpoints, losses, "finetune")
    student = ddp.wrap(model, device)
    data = StepBatches(lab_pool, mix_pool, cfg.batch_labeled, cfg.batch_unlabeled, p.finetune.seed * 1000 + rank,
                       cfg.steps, start, neighbours=cfg.multitask, with_mixing=cfg.mix != "none",
                       crop=crop_size(cfg.crop_height, cfg.crop_width))
    workers = p.compute.num_workers
    # Own generator: creating the iterator must not draw from the global RNG (resume determinism).
    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=2 if workers else None, generator=torch.Generator().manual_seed(p.finetune.seed))
    step_fn = FinetuneStep(cfg, ObjectiveConfig(p.sde.min_depth, p.sde.max_depth, p.sde.smoothness), sde_net)

    def forward(i: int, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = {k: (v.to(device, non_blocking=True) if k not in ("step", "mix_seed") else v)
                 for k, v in batch.items()}
        set_lr(opt, lr_factor(i, cfg.steps, cfg.lr_decay_at))
        loss, parts = step_fn(student, teacher, batch)
        return loss, {"lr": opt.param_groups[1]["lr"], **parts}

    def update(i: int, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        ema_update(teacher, model, ema_alpha(i, cfg.ema_alpha))

    result = loop.train_steps(forward, update, loader, start=start, steps=cfg.steps, name="finetune", loss_log=losses,
                              checkpoints=checkpoints, tracker=tracker, show=("loss", "sup"),
                              interrupt_at=interrupt_at)
    return FinetuneRun(model, teacher, result, labelled, unlabelled, val, transfer, cfg, sde_cfg, device, resumer,
                       paths)


def write_outputs(run: FinetuneRun) -> dict[str, Any]:
    """Validate student and teacher, write the segmenter (`paths.out_model`) and the loss curve, drop
    the resume checkpoint (rank 0, after training); returns the stage's metrics (without its wall time)."""
    cfg, losses = run.config, run.result.loss_log
    val_images, val_labels = load_val(run.val, run.paths.manifest.parent)
    student_val = val_miou(run.model, val_images, val_labels, run.device)
    teacher_val = val_miou(run.teacher, val_images, val_labels, run.device)
    meta = {"labelled_ids": run.labelled["id"].tolist(), "transfer": run.transfer, "steps": cfg.steps,
            "val_miou": student_val.get("miou")}
    save_segmenter(run.paths.out_model, run.model, to_dict(cfg), run.sde_config, meta)
    losses.write(run.paths.loss_csv)
    run.resumer.done()
    return {
        "train": {k: losses.summary(k) for k in SUMMARY_KEYS if losses.summary(k)},
        "val": {"student": student_val, "teacher": teacher_val},
        "val_miou": student_val.get("miou"),
        "frames": {"labelled": len(run.labelled), "unlabelled": len(run.unlabelled), "val": len(run.val)},
        "init": cfg.init, "multitask": cfg.multitask, "mix": cfg.mix, "steps": cfg.steps,
    }
