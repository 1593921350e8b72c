"""pretrain and retrain as library calls: build the triplet dataset, train the SDE, save it, evaluate it
on val next to the row-median prior; and retrain's shortcut.

Stage 1 (pretrain) trains on every training triplet, stage 2 (retrain) from scratch on the frames the
filter kept. When the filter keeps every frame, stage 2 would be stage 1 again, bit for bit (same
frames, same seed, same params): retrain then copies stage 1 instead of training (`stage1_reuse` says
whether it may, from what the stage-1 checkpoint records about its training).

The files come in an `SdePaths` the stage builds from semdepth/layout.py. Outputs are written by
rank 0 only; under torchrun every rank trains on its share of each batch. `p` is a stage's params
view: sde (its seed seeds the training), data.hood_fraction, eval.* and compute.*.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from semdepth import SemdepthError
from semdepth.config import to_dict
from semdepth.data.crop import crop_size
from semdepth.data.sequence import TripletDataset
from semdepth.io import atomic_file, read_table
from semdepth.metrics.depth_eval import evaluate_depth_net, row_median_prior_metrics
from semdepth.models.checkpointing import set_checkpointing
from semdepth.models.depth_net import DepthNet
from semdepth.models.sde import load_sde, read_sde, save_sde
from semdepth.runtime import get_logger
from semdepth.training import ddp
from semdepth.training.loop import TrainResult
from semdepth.training.loss_log import LossLog
from semdepth.training.resume import config_key
from semdepth.training.sde_trainer import SdeTrainer


@dataclass(frozen=True)
class SdePaths:
    """The files one SDE stage reads and writes."""

    manifest: Path  # the prepared frames (training triplets, val)
    pseudolabels: Path  # foreground maps of guided training; class labels of the val metrics
    pseudolabel_model: Path  # sde.pretrained "source" and pac guidance read it
    out_model: Path  # the trained checkpoint
    loss_csv: Path  # its loss curve
    resume_root: Path  # resumable checkpoints of a killed run
    stage1: Path | None = None  # retrain: stage 1's checkpoint (compared, maybe copied, evaluated)
    filter_frames: Path | None = None  # retrain: the filter's table (`kept`)


def resolve_pretrained(choice: str, source_model: Path) -> str | None:
    """sde.pretrained -> what ResnetEncoder takes: None, "imagenet" or a file path ("source" is
    `source_model`, the pseudolabel stage's model)."""
    if choice in ("none", ""):
        return None
    if choice == "imagenet":
        return "imagenet"
    path = source_model if choice == "source" else Path(choice)
    if not path.is_file():
        what = "the pseudolabel stage's model" if choice == "source" else "a backbone state dict"
        raise SemdepthError(f"sde.pretrained: {path} not found (expected {what})")
    return str(path)


def triplet_dataset(paths: SdePaths, cfg: Any, ids: Sequence[str] | None = None) -> TripletDataset:
    """The training triplets (restricted to `ids` if given), with foreground maps when guided."""
    if not paths.manifest.is_file():
        raise SemdepthError(f"{paths.manifest}: not found (run downsample first)")
    pseudo = None
    if cfg.guidance != "none":
        if not paths.pseudolabels.is_file():
            raise SemdepthError(f"sde.guidance {cfg.guidance}: {paths.pseudolabels} not found "
                                f"(run pseudolabel first)")
        pseudo = paths.pseudolabels
    return TripletDataset(paths.manifest, ids, cfg.flip_prob, cfg.jitter_prob, pseudo, cfg.source_offsets,
                          crop=crop_size(cfg.crop_height, cfg.crop_width))


def evaluate(p: Any, paths: SdePaths, device: torch.device, depth_net: DepthNet, description: str) -> dict:
    return evaluate_depth_net(depth_net, paths.manifest, device=device, net_min_depth=p.sde.min_depth,
                              net_max_depth=p.sde.max_depth, eval_cfg=p.eval, hood_fraction=p.data.hood_fraction,
                              pseudolabels=paths.pseudolabels, batch_size=p.eval.batch_size, description=description)


def prior(p: Any, paths: SdePaths) -> dict:
    return row_median_prior_metrics(paths.manifest, eval_cfg=p.eval, hood_fraction=p.data.hood_fraction)


def headline(metrics: dict, prior_metrics: dict) -> dict:
    """The numbers a reader wants first: AbsRel of the network against both priors."""
    net = metrics["abs_rel"]
    return {"abs_rel": net, "prior_abs_rel_unscaled": prior_metrics["unscaled"]["abs_rel"],
            "prior_abs_rel_median_scaled": prior_metrics["median_scaled"]["abs_rel"],
            "beats_prior": bool(net < min(prior_metrics["unscaled"]["abs_rel"],
                                          prior_metrics["median_scaled"]["abs_rel"]))}


def train_summary(result: TrainResult, frames: int, batch_size: int) -> dict:
    """The "train" block of the stage metrics; speeds are None when no step ran in this process."""
    timed = result.seconds > 0 and result.steps_run > 0
    return {
        "frames": frames, "steps": result.steps, "batch_size": batch_size,
        "seconds": round(result.seconds, 2), "steps_per_s": result.steps_per_s if timed else None,
        "images_per_s": result.steps_per_s * batch_size if timed else None,
        "data_wait_share": result.data_wait / result.seconds if result.seconds > 0 else None,
        "resumed": result.steps_run < result.steps, "processes": ddp.world()[1],
        "loss": result.loss_log.summary("loss"), "final_t_z": result.loss_log.summary("t_z").get("last"),
    }


def train_sde(p: Any, paths: SdePaths, device: torch.device, dataset: TripletDataset, name: str,
              tracker: Any = None) -> tuple[dict, DepthNet | None]:
    """Train on `dataset`, save `paths.out_model` and the loss curve (rank 0); returns the training
    summary and the trained depth net (on rank 0; None elsewhere).

    The checkpoint's meta records what defines the training (frames in order, seed, processes) and
    the loss curve, so a later retrain can tell whether training again would reproduce it."""
    cfg = p.sde
    trainer = SdeTrainer(cfg, dataset, device, seed=p.sde.seed, num_workers=p.compute.num_workers,
                         pretrained=resolve_pretrained(cfg.pretrained, paths.pseudolabel_model), tracker=tracker,
                         resume_name=name, resume_root=paths.resume_root, description=name,
                         pseudolabel_model=paths.pseudolabel_model if cfg.guidance == "pac" else None)
    for net in (trainer.depth_net, trainer.pose_net):
        set_checkpointing(net, p.compute.checkpointing)  # memory only: the same result either way
    get_logger(f"semdepth.{name}").info(
        "%s: %d training triplets, %d steps of batch %d, encoder ResNet-%d (%s), guidance %s", name, len(dataset),
        cfg.steps, cfg.batch_size, cfg.encoder_layers, cfg.pretrained, cfg.guidance)
    result = trainer.train()
    summary = train_summary(result, len(dataset), cfg.batch_size)
    rank0 = ddp.world()[0] == 0
    if rank0:
        save_sde(paths.out_model, trainer.depth_net, trainer.pose_net, to_dict(cfg),
                 {"stage": name, "frames": len(dataset), "steps": result.steps, "seed": p.sde.seed,
                  "pretrained": cfg.pretrained, "height": dataset.height, "width": dataset.width,
                  "frame_ids": list(dataset.ids), "processes": ddp.world()[1], "loss_rows": result.loss_log.rows})
        result.loss_log.write(paths.loss_csv)
    ddp.barrier()
    trainer.finish()
    return summary, (trainer.depth_net if rank0 else None)


def pretrain(p: Any, paths: SdePaths, device: torch.device, tracker: Any = None) -> dict | None:
    """Stage 1 on every training triplet: writes `paths.out_model` and its loss curve; returns the
    stage metrics (val depth, the row-median prior, training) on rank 0, None elsewhere."""
    summary, depth_net = train_sde(p, paths, device, triplet_dataset(paths, p.sde), "pretrain", tracker)
    if depth_net is None:
        return None
    val = evaluate(p, paths, device, depth_net, "pretrain: val depth")
    prior_metrics = prior(p, paths)
    return {**headline(val, prior_metrics), "val": val, "row_median_prior": prior_metrics, "train": summary}


def kept_ids(path: Path) -> tuple[list[str], int]:
    """The ids the filter kept, and how many frames it judged."""
    df = read_table(path)
    if "kept" not in df or "id" not in df:
        raise SemdepthError(f"{path}: needs columns id and kept")
    kept = df.loc[df["kept"].astype(bool), "id"].tolist()
    if not kept:
        raise SemdepthError(f"{path}: the filter kept no frames; loosen filter.threshold_px or filter.margin")
    return kept, len(df)


def stage1_reuse(stage1: Mapping[str, Any], cfg: Any, seed: int, frame_ids: Sequence[str], processes: int,
                 path: Path) -> tuple[bool, str]:
    """Whether training stage 2 on `frame_ids` would reproduce the stage-1 checkpoint `stage1` (read
    from `path`) bit for bit (same frames in the same order, sde params, seed and number of
    processes), and why (not)."""
    meta = stage1.get("meta", {})
    if "frame_ids" not in meta or "loss_rows" not in meta:
        return False, f"{path} does not record its training frames (written by an older version)"
    trained = list(meta["frame_ids"])
    if len(trained) != len(frame_ids):
        return False, f"the filter kept {len(frame_ids)} of the {len(trained)} training frames of stage 1"
    if trained != list(frame_ids):
        return False, "the kept frames are not the training frames of stage 1"
    if config_key(dict(stage1["config"])) != config_key(to_dict(cfg)):
        return False, "stage 1 was trained with other sde params"
    if meta.get("seed") != seed:
        return False, f"stage 1 was trained with seed {meta.get('seed')}, not {seed}"
    if meta.get("processes") != processes:
        return False, f"stage 1 was trained on {meta.get('processes')} processes, not {processes}"
    return True, f"the filter kept all {len(trained)} training frames of stage 1, same sde params and seed"


def copy_stage1(stage1: Mapping[str, Any], paths: SdePaths) -> LossLog:
    """Write stage 1's checkpoint (read from `paths.stage1`) as `paths.out_model` (meta: stage retrain,
    copied from stage 1) and stage 1's loss curve as stage 2's; returns that curve."""
    ck = {**stage1, "meta": {**stage1["meta"], "stage": "retrain", "copied_from": str(paths.stage1)}}
    with atomic_file(paths.out_model) as tmp:
        torch.save(ck, tmp)
    losses = LossLog()
    losses.load(stage1["meta"]["loss_rows"])
    losses.write(paths.loss_csv)
    return losses


def retrain(p: Any, paths: SdePaths, device: torch.device, tracker: Any = None) -> dict | None:
    """Stage 2 on the filter's kept frames (or stage 1 copied, when that is what training would give):
    writes `paths.out_model` and its loss curve; returns the metrics (stage-2 and stage-1 val, prior,
    frames kept, whether the shortcut was taken and why) on rank 0, None elsewhere."""
    if paths.stage1 is None or paths.filter_frames is None:
        raise ValueError("retrain: SdePaths.stage1 and SdePaths.filter_frames are required")
    log = get_logger("semdepth.retrain")
    ids, total = kept_ids(paths.filter_frames)
    log.info("retrain: %d of %d frames kept by the filter", len(ids), total)
    dataset = triplet_dataset(paths, p.sde, ids)
    stage1 = read_sde(paths.stage1)
    shortcut, reason = stage1_reuse(stage1, p.sde, p.sde.seed, dataset.ids, ddp.world()[1], paths.stage1)
    if shortcut:
        if ddp.world()[0] != 0:
            return None
        log.info("retrain: %s: stage 2 is stage 1, copied to %s without training", reason, paths.out_model)
        losses = copy_stage1(stage1, paths)
        summary = train_summary(TrainResult(int(stage1["meta"]["steps"]), 0, 0.0, losses), len(dataset),
                                p.sde.batch_size)
        val = val1 = evaluate(p, paths, device, load_sde(paths.out_model, device)[0],
                              "retrain: val depth (stage 2 = 1)")
    else:
        del stage1  # its weights are not needed while training
        log.info("retrain: training stage 2 (%s)", reason)
        summary, depth_net = train_sde(p, paths, device, dataset, "retrain", tracker)
        if depth_net is None:
            return None
        val = evaluate(p, paths, device, depth_net, "retrain: val depth (stage 2)")
        val1 = evaluate(p, paths, device, load_sde(paths.stage1, device)[0], "retrain: val depth (stage 1)")
    prior_metrics = prior(p, paths)
    return {**headline(val, prior_metrics), "stage1_abs_rel": val1["abs_rel"], "val": val, "stage1_val": val1,
            "row_median_prior": prior_metrics, "train": summary, "frames_kept": len(ids), "frames_total": total,
            "shortcut": shortcut, "shortcut_reason": reason}
