"""Batched pseudo-label inference, PNG outputs, and scoring against GT where it exists.

Per frame three uint8 PNGs at the working resolution (docs/contracts.md): train ids (19-class models
only), confidence = round(255 * max softmax), foreground 0/1. A network run at another size
(`pseudolabel.height/width`) has its ids nearest- and its max softmax area-resized to the working size
first (`frames.resize_maps`), and the foreground is derived from the resized ids. With a 19-class model the foreground
is the SEEM set of train ids (`FOREGROUND_TRAIN_IDS`); with torchvision's 21-class VOC model it is
"any VOC class" (argmax > 0), as SegDepth did.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from semdepth.data.frames import FrameDataset, write_png
from semdepth.data.labels import FOREGROUND_LUT, IGNORE, NUM_CLASSES, TRAIN_NAMES
from semdepth.metrics.segmentation import ConfusionMatrix
from semdepth.models.deeplab import DeepLab
from semdepth.progress import track
from semdepth.pseudolabel.frames import resize_maps

_FG_LUT = torch.from_numpy(FOREGROUND_LUT.astype(np.int64))


def trainid_to_foreground(trainid: torch.Tensor) -> torch.Tensor:
    """Train ids (255 -> background) -> uint8 0/1 foreground map."""
    return _FG_LUT.to(trainid.device)[trainid.long()].to(torch.uint8)


def voc_to_foreground(voc: torch.Tensor) -> torch.Tensor:
    """VOC class ids (0 = background, 1..20 objects) -> uint8 0/1 (SegDepth's `argmax > 0`)."""
    return (voc > 0).to(torch.uint8)


@torch.inference_mode()
def predict(model: DeepLab, images: torch.Tensor, out_hw: tuple[int, int] | None = None,
            cpu_bf16: bool = False) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """images [B,3,H,W] in [0,1] -> (train ids uint8 or None for VOC, confidence uint8, foreground uint8),
    at `out_hw` (None: H x W; resized on the CPU otherwise)."""
    amp = images.device.type == "cuda" or cpu_bf16
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(images)
    prob = logits.float().softmax(1)
    conf, arg = prob.max(1)
    if out_hw is not None and tuple(out_hw) != tuple(arg.shape[-2:]):
        conf, arg = resize_maps(conf, arg, out_hw)
    conf_u8 = (conf * 255).round_().to(torch.uint8)
    if model.voc:
        return None, conf_u8, voc_to_foreground(arg)
    trainid = arg.to(torch.uint8)
    return trainid, conf_u8, trainid_to_foreground(trainid)


@dataclass
class SplitScores:
    """Confusion matrices (19 classes and binary foreground) for one group of frames."""
    semantic: ConfusionMatrix = field(default_factory=lambda: ConfusionMatrix(NUM_CLASSES, IGNORE))
    binary: ConfusionMatrix = field(default_factory=lambda: ConfusionMatrix(2, IGNORE))
    frames: int = 0

    def update(self, trainid: torch.Tensor | None, fg: torch.Tensor, gt: torch.Tensor) -> None:
        gt = gt.long()
        if trainid is not None:
            self.semantic.update(trainid, gt)
        gt_fg = torch.where(gt == IGNORE, IGNORE, trainid_to_foreground(gt.clamp(0, 255)).long())
        self.binary.update(fg, gt_fg)
        self.frames += 1

    def summary(self, semantic: bool = True) -> dict:
        b = self.binary.iou()
        out = {"frames": self.frames, "foreground_iou": _f(b[1]), "background_iou": _f(b[0]),
               "binary_miou": _f(self.binary.miou()), "binary_accuracy": _f(self.binary.pixel_accuracy())}
        if semantic:
            out.update(self.semantic.summary(TRAIN_NAMES))
            out["road_iou"] = out["class_iou"]["road"]  # the filter's ground candidates
        return out


def _f(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


@dataclass
class InferenceResult:
    rows: list[dict]
    scores: dict[str, SplitScores]
    net_seconds: float  # forward passes only (synchronised), what frames/s is computed from
    total_seconds: float  # including reading, writing and scoring

    @property
    def frames(self) -> int:
        return len(self.rows)


def run_inference(model: DeepLab, ids: Sequence[str], splits: Sequence[str], images: Sequence[Path],
                  labels: Sequence[Path | None], out_dir: Path, rel_names: Sequence[str], *,
                  batch_size: int, device: torch.device, num_workers: int = 0, data: Dataset | None = None,
                  out_hw: tuple[int, int] | None = None, cpu_bf16: bool = False) -> InferenceResult:
    """Predict every frame, write `<out_dir>/<rel_name>_{trainid,confidence,foreground}.png` and
    score frames that have a label (grouped by split). Returns one table row per frame.

    `data` replaces the prepared-frame reader (`FrameDataset(images, labels)`), e.g. raw frames at
    another size; `out_hw` is then the working size the maps are written at."""
    model.to(device).eval()
    data = FrameDataset(images, labels) if data is None else data
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    scores: dict[str, SplitScores] = {}
    rows: list[dict] = []
    net = 0.0
    t_all = time.perf_counter()
    batches = (len(data) + batch_size - 1) // batch_size
    for batch in track(loader, "pseudolabel inference", total=batches):
        x = batch["image"].to(device, non_blocking=True)
        t0 = time.perf_counter()
        trainid, conf, fg = predict(model, x, out_hw, cpu_bf16)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        net += time.perf_counter() - t0
        trainid = None if trainid is None else trainid.cpu()
        conf, fg = conf.cpu(), fg.cpu()
        for k, i in enumerate(batch["index"].tolist()):
            base = out_dir / rel_names[i]
            base.parent.mkdir(parents=True, exist_ok=True)
            row = {"id": ids[i], "split": splits[i], "trainid": None}
            if trainid is not None:
                write_png(f"{base}_trainid.png", trainid[k].numpy())
                row["trainid"] = f"{rel_names[i]}_trainid.png"
            write_png(f"{base}_confidence.png", conf[k].numpy())
            write_png(f"{base}_foreground.png", fg[k].numpy())
            row["confidence"] = f"{rel_names[i]}_confidence.png"
            row["foreground"] = f"{rel_names[i]}_foreground.png"
            rows.append(row)
            if labels[i] is not None:
                scores.setdefault(splits[i], SplitScores()).update(
                    None if trainid is None else trainid[k], fg[k], batch["label"][k])
    return InferenceResult(rows, scores, net, time.perf_counter() - t_all)


def positional_prior(labels: Sequence[Path], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The trivial baseline: per pixel position, the majority train id and the majority
    foreground/background over a set of label maps (e.g. the source domain's). Positions never
    labelled fall back to the overall majority class."""
    from semdepth.data.frames import read_label

    counts = torch.zeros(NUM_CLASSES, *shape, dtype=torch.int64)
    for p in labels:
        lab = read_label(p)
        if tuple(lab.shape) != tuple(shape):
            continue
        valid = lab != IGNORE
        counts.scatter_add_(0, lab.clamp(max=NUM_CLASSES - 1)[None], valid[None].long())
    overall = int(counts.sum((1, 2)).argmax())
    majority = counts.argmax(0)
    majority[counts.sum(0) == 0] = overall
    fg_ids = torch.from_numpy(np.flatnonzero(FOREGROUND_LUT[:NUM_CLASSES]))
    fg_count = counts[fg_ids].sum(0)
    fg = (fg_count * 2 > counts.sum(0)).to(torch.uint8)
    return majority.to(torch.uint8), fg
