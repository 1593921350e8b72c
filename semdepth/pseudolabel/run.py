"""Pseudo-labels for every target-domain frame, end to end: weights, inference, scores.

Weights (`pseudolabel.weights`): `train` (DeepLabV3 trained on the labelled source-domain frames,
resumable), `torchvision-coco` (torch's cache, binary foreground only) or a local checkpoint path.
Pseudo-labels are scored against GT wherever the target has labels, next to a trivial baseline (the
source domain's per-position majority class), so that a weak pseudo-labeller shows up as such: per
split the 19-class IoUs, the foreground IoU (the binary map the depth guidance uses) and the road IoU
(the filter's ground candidates), the baseline's same numbers, and the gain over it (`vs_baseline`).
With `pseudolabel.height/width` the network trains and infers on raw frames at that size
(`frames.py`); scores are always at the working resolution, against the prepared labels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from semdepth import SemdepthError
from semdepth.config import PseudolabelConfig, to_dict
from semdepth.data.frames import read_label
from semdepth.data.manifest import labelled_source, read_manifest, target_frames
from semdepth.io import atomic_dir, atomic_file, resolve, write_fingerprint, write_table
from semdepth.models.deeplab import DeepLab, checkpoint_dict, load_checkpoint, load_coco
from semdepth.pseudolabel.frames import RawFrames, RawInferenceSet, network_size
from semdepth.pseudolabel.infer import InferenceResult, SplitScores, positional_prior, run_inference
from semdepth.pseudolabel.train import train_deeplab
from semdepth.runtime import get_logger
from semdepth.training.resume import Resumer

log = get_logger("semdepth.pseudolabel")

REQUIRED_COLUMNS = ("id", "split", "domain", "city", "image", "label", "height", "width")
TABLE_COLUMNS = ["id", "split", "trainid", "confidence", "foreground"]


@dataclass(frozen=True)
class PseudolabelPaths:
    manifest: Path
    out_dir: Path  # PNGs + the table, replaced as a whole
    table: str  # file name of the table inside out_dir
    checkpoint: Path  # the DeepLab used (what finetune's `source` init and pac read)
    loss_csv: Path  # the training loss curve (header only when nothing was trained)
    resume_root: Path  # resumable training checkpoints


def _paths(df: pd.DataFrame, column: str, root: Path) -> list[Path | None]:
    return [resolve(v, root) if isinstance(v, str) else None for v in df[column]]


def obtain_model(cfg: PseudolabelConfig, source: pd.DataFrame, root: Path, hw: tuple[int, int], *, seed: int,
                 device: torch.device, num_workers: int, tracker: Any, resume_root: Path, manifest: Path,
                 frames: RawFrames | None = None) -> tuple[DeepLab, dict[str, Any] | None, Any]:
    """(model, training summary or None, training result or None) for `cfg.weights`; `hw` is the size
    the network trains at (read from the raw root through `frames` when given)."""
    if cfg.weights == "torchvision-coco":
        return load_coco(cfg.model, cfg.output_stride), None, None
    if cfg.weights != "train":
        return load_checkpoint(cfg.weights, cfg.model, cfg.output_stride), None, None
    if source.empty:
        raise SemdepthError(f"{manifest}: no labelled source-domain frames to train on "
                            f"(pseudolabel.weights: train); prepare the 'source' split or set "
                            f"pseudolabel.weights to torchvision-coco or a checkpoint path")
    model = DeepLab(cfg.model, output_stride=cfg.output_stride)
    resumer = Resumer("pseudolabel", {"cfg": to_dict(cfg), "seed": seed, "frames": sorted(source["id"].tolist())},
                      root=resume_root)
    log.info("training %s on %d labelled source frames for %d steps", cfg.model, len(source), cfg.steps)
    if frames is None:
        images, labels = _paths(source, "image", root), _paths(source, "label", root)
    else:
        images, labels = frames.images(source), frames.labels(source)
    training = train_deeplab(model, images, labels, cfg, hw, seed=seed, device=device, num_workers=num_workers,
                             tracker=tracker, resumer=resumer, checkpoint_every=max(50, cfg.steps // 10),
                             frames=frames)
    resumer.done()
    s = training.loss_log.summary()
    summary = {"steps": training.steps, "source_frames": len(source), "seconds": round(training.seconds, 3),
               "steps_per_s": round(training.steps_per_s, 4), "resumed_from": training.resumed_from,
               "loss_first": s.get("first"), "loss_last": s.get("last"), "loss_min": s.get("min")}
    return model, summary, training


def write_pseudolabels(model: DeepLab, target: pd.DataFrame, root: Path, paths: PseudolabelPaths,
                       cfg: PseudolabelConfig, *, device: torch.device, num_workers: int,
                       frames: RawFrames | None = None, working_hw: tuple[int, int] | None = None
                       ) -> InferenceResult:
    """Inference on every target frame into `paths.out_dir` (one atomic directory with its table and
    fingerprint), then the model checkpoint. With `frames` the network reads raw frames and the maps
    are resized to `working_hw`."""
    ids, splits = target["id"].tolist(), target["split"].tolist()
    rel_names = [f"{sp}/{c}/{i}" for sp, c, i in zip(splits, target["city"], ids)]
    images, labels = _paths(target, "image", root), _paths(target, "label", root)
    data = None
    if frames is not None:
        assert working_hw is not None
        data = RawInferenceSet(frames, frames.images(target), labels, working_hw)
    with atomic_dir(paths.out_dir) as tmp:
        res = run_inference(model, ids, splits, images, labels, tmp, rel_names, batch_size=cfg.infer_batch_size,
                            device=device, num_workers=num_workers, data=data,
                            out_hw=None if frames is None else working_hw, cpu_bf16=cfg.cpu_bf16)
        write_table(pd.DataFrame(res.rows, columns=TABLE_COLUMNS), tmp / paths.table)
        write_fingerprint(tmp)
    with atomic_file(paths.checkpoint) as tmp:
        torch.save(checkpoint_dict(model), tmp)
    return res


_GAIN_KEYS = ("miou", "foreground_iou", "road_iou")


def _gain(model: dict, base: dict) -> dict[str, float | None]:
    """Model minus baseline for the numbers the depth side uses (None where either is undefined)."""
    return {k: None if model.get(k) is None or base.get(k) is None else model[k] - base[k] for k in _GAIN_KEYS}


def score_metrics(res: InferenceResult, semantic: bool, target: pd.DataFrame, source: pd.DataFrame, root: Path,
                  hw: tuple[int, int]) -> dict[str, Any]:
    """Scores per split and over all labelled target frames, and the positional baseline's."""
    out: dict[str, Any] = {}
    merged = SplitScores()
    for sp, sc in sorted(res.scores.items()):
        out[sp] = sc.summary(semantic)
        merged.semantic.merge(sc.semantic)
        merged.binary.merge(sc.binary)
        merged.frames += sc.frames
    if merged.frames:
        out["all_labelled"] = merged.summary(semantic)
    prior_src = [p for p in _paths(source, "label", root) if p is not None]
    if prior_src and merged.frames:
        majority, fg_prior = positional_prior(prior_src, hw)
        base: dict[str, SplitScores] = {}
        for sp, lp in zip(target["split"].tolist(), _paths(target, "label", root)):
            if lp is not None:
                base.setdefault(sp, SplitScores()).update(majority, fg_prior, read_label(lp))
        out["baseline"] = {"kind": "per-pixel majority of the source-domain labels",
                           **{sp: sc.summary(True) for sp, sc in sorted(base.items())}}
        if semantic:
            out["vs_baseline"] = {sp: _gain(out[sp], out["baseline"][sp]) for sp in sorted(base) if sp in out}
    return out


def raw_frames(cfg: PseudolabelConfig, raw_dir: str | Path | None, working_hw: tuple[int, int],
               sample: pd.DataFrame) -> RawFrames | None:
    """The raw reader when `pseudolabel.height/width` asks for another size than the working one
    (checked against the raw frame of `sample`'s first manifest row); None otherwise."""
    hw = network_size((cfg.height, cfg.width), working_hw)
    if hw == tuple(working_hw):
        return None
    if raw_dir is None:
        raise SemdepthError(f"pseudolabel.height/width: {hw[0]}x{hw[1]} needs the raw frames (data.raw_dir)")
    frames = RawFrames(raw_dir, hw)
    frames.check(sample, working_hw)
    return frames


def run_pseudolabel(paths: PseudolabelPaths, cfg: PseudolabelConfig, *, seed: int, device: torch.device,
                    num_workers: int, tracker: Any, raw_dir: str | Path | None = None) -> dict[str, Any]:
    """Weights, pseudo-labels of every target frame, checkpoint and loss curve; returns the metrics.
    `raw_dir` (data.raw_dir) is read only when `pseudolabel.height/width` is not the working size."""
    manifest = read_manifest(paths.manifest, REQUIRED_COLUMNS)
    root = paths.manifest.parent
    target = target_frames(manifest)
    if target.empty:
        raise SemdepthError(f"{paths.manifest}: no target-domain frames to pseudo-label")
    hw = (int(target["height"].iloc[0]), int(target["width"].iloc[0]))
    source = labelled_source(manifest)
    frames = raw_frames(cfg, raw_dir, hw, target.iloc[:1])
    net_hw = hw if frames is None else frames.hw
    metrics: dict[str, Any] = {"model": cfg.model, "weights": cfg.weights, "network_size": list(net_hw)}
    model, training, result = obtain_model(cfg, source, root, net_hw, seed=seed, device=device,
                                           num_workers=num_workers, tracker=tracker, resume_root=paths.resume_root,
                                           manifest=paths.manifest, frames=frames)
    metrics["output_stride"] = model.output_stride
    if training is not None:
        metrics["training"] = training
    if model.voc:
        log.warning("%s gives VOC classes: writing the binary foreground map (any VOC class) and "
                    "confidence only; no 19-class train-id map and no mIoU", cfg.weights)
    res = write_pseudolabels(model, target, root, paths, cfg, device=device, num_workers=num_workers,
                             frames=frames, working_hw=hw)
    semantic = not model.voc
    metrics.update({"frames": res.frames, "semantic_map": semantic,
                    "frames_per_s": round(res.frames / res.net_seconds, 2) if res.net_seconds else None,
                    "frames_per_s_total": round(res.frames / res.total_seconds, 2),
                    "device": str(device)})
    metrics.update(score_metrics(res, semantic, target, source, root, hw))
    if result is not None:
        result.loss_log.write(paths.loss_csv)
    else:  # the plot is a declared output: an empty curve says "nothing was trained"
        with atomic_file(paths.loss_csv) as tmp:
            tmp.write_text("step,loss\n")
    return metrics


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def log_summary(logger: logging.Logger, m: dict[str, Any]) -> None:
    """The run's scores in a few log lines (val and train against the baseline, speed)."""
    for sp in ("val", "train"):
        if sp in m:
            base = m.get("baseline", {}).get(sp, {})
            logger.info("%s: mIoU %s (baseline %s), foreground IoU %s (baseline %s), road IoU %s (baseline %s) "
                        "on %d frames", sp, _fmt(m[sp].get("miou")), _fmt(base.get("miou")),
                        _fmt(m[sp].get("foreground_iou")), _fmt(base.get("foreground_iou")),
                        _fmt(m[sp].get("road_iou")), _fmt(base.get("road_iou")), m[sp]["frames"])
    logger.info("%d frames, %.1f frames/s (network), %.1f frames/s overall", m["frames"],
                m["frames_per_s"] or 0.0, m["frames_per_s_total"])
