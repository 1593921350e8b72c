"""The final evaluation on the annotated val frames: segmentation, depth of every model, plots, figures.

- Segmentation of the segmenter at the working resolution against the nearest-resized labels
  (Hoyer's protocol): confusion matrix, per-class IoU, mIoU over the classes present in the GT
  (`miou`) and Cityscapes' convention (`miou_cityscapes`: classes in GT or prediction, what
  `cityscapesscripts` reports), pixel accuracy.
- Depth of both SDE stages, and of the segmenter's own depth branch in multi-task mode: the 7
  metrics over all valid pixels, AbsRel per class, on moving objects and in a band around semantic
  edges (semdepth/metrics/depth_eval.py).
- DVC plots: per-class IoU, a confusion sample (one row per pixel of a proportional, deterministic
  sample, because DVC's confusion template counts rows), per-class AbsRel of both SDE stages; PNG
  figures: qualitative rows (input | depth stage 1 | depth stage 2 | segmentation | GT), per-class IoU
  bars, the confusion matrix, per-class AbsRel bars.

The caller passes every path in (`EvalInputs`, `EvalOutputs`); nothing here knows the pipeline layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from semdepth import SemdepthError
from semdepth.config import EvalConfig
from semdepth.data.frames import read_label, read_rgb
from semdepth.data.labels import NUM_CLASSES, TRAIN_NAMES, colorize
from semdepth.data.manifest import val_frames
from semdepth.io import atomic_dir, read_table, resolve, write_csv_rows
from semdepth.metrics.depth_eval import evaluate_depth_net, predict_depth
from semdepth.metrics.segmentation import ConfusionMatrix, class_iou_rows
from semdepth.models.sde import load_sde
from semdepth.models.segmenter import load_segmenter
from semdepth.progress import track
from semdepth.viz import colorize_depth, save_bar, save_confusion, save_grid

MAX_CONFUSION_ROWS = 20_000
SDE_STAGES = ("stage1", "stage2")  # the SDE models of EvalInputs.sde_models, in figure-column order
SAMPLE_TITLES = ["input", "depth stage 1", "depth stage 2", "segmentation", "ground truth"]


@dataclass(frozen=True)
class EvalInputs:
    manifest: Path
    pseudolabels: Path  # class labels for per-class depth where the GT has none; may be absent
    segmenter: Path
    sde_models: Mapping[str, Path]  # SDE_STAGES -> checkpoint


@dataclass(frozen=True)
class EvalOutputs:
    class_iou_csv: Path
    confusion_csv: Path
    class_depth_csv: Path
    figures: Path  # directory, replaced as a whole


@dataclass
class SegmentationEval:
    matrix: ConfusionMatrix
    n_images: int
    samples: list[list[np.ndarray]]  # figure rows, see SAMPLE_TITLES
    sample_ids: list[str]

    @property
    def present(self) -> np.ndarray:
        """[NUM_CLASSES] bool: classes with GT pixels."""
        return self.matrix.matrix.sum(1) > 0

    def iou_gt(self) -> np.ndarray:
        """Per-class IoU, NaN for classes absent from the GT."""
        return np.where(self.present, self.matrix.iou(), np.nan)

    def summary(self) -> dict[str, Any]:
        cm, present = self.matrix, self.present
        s = cm.summary(TRAIN_NAMES)
        return {"miou": cm.miou("gt"), "miou_cityscapes": cm.miou("union"),
                "pixel_accuracy": s["pixel_accuracy"], "class_iou": s["class_iou"],
                "classes_in_gt": [TRAIN_NAMES[c] for c in range(NUM_CLASSES) if present[c]],
                "pixels": s["pixels"], "n_images": self.n_images}


@dataclass
class Evaluation:
    segmentation: SegmentationEval
    depth: dict[str, dict]  # model name -> depth metrics (evaluate_depth_net)
    segmenter_config: dict

    def metrics(self, seconds: float) -> dict[str, Any]:
        """metrics/eval.json."""
        segm = self.segmentation.summary()
        return {"segmentation": segm, "depth": self.depth,
                "miou": segm["miou"], "miou_cityscapes": segm["miou_cityscapes"],
                "abs_rel": {name: d["abs_rel"] for name, d in self.depth.items()},
                "segmenter": {k: self.segmenter_config.get(k) for k in ("init", "multitask", "mix", "steps")},
                "time_s": seconds}

    def class_depth_rows(self) -> list[dict]:
        return [{"class": c, "abs_rel": v, "stage": name} for name in SDE_STAGES
                for c, v in self.depth[name].get("class_abs_rel", {}).items()]


def confusion_sample_rows(matrix: np.ndarray, names: Sequence[str], max_rows: int = MAX_CONFUSION_ROWS
                          ) -> list[dict]:
    """`actual, predicted` rows, one per pixel of a sample that keeps the matrix's proportions.

    Cell counts are scaled to at most `max_rows` in total with the largest-remainder method, so the
    result is deterministic and every cell with at least total/max_rows pixels appears.
    """
    m = np.asarray(matrix, np.int64)
    total = int(m.sum())
    if total == 0:
        return []
    if total <= max_rows:
        alloc = m.copy()
    else:
        exact = m.astype(np.float64) * max_rows / total
        alloc = np.floor(exact).astype(np.int64)
        rest = max_rows - int(alloc.sum())
        if rest > 0:
            order = np.argsort(-(exact - alloc), axis=None, kind="stable")[:rest]
            alloc.flat[order] += 1
    rows = []
    for i, j in zip(*np.nonzero(alloc)):
        rows += [{"actual": names[i], "predicted": names[j]}] * int(alloc[i, j])
    return rows


@torch.no_grad()
def evaluate_segmentation(seg: torch.nn.Module, sde_nets: Mapping[str, torch.nn.Module], frames: pd.DataFrame,
                          root: Path, *, device: torch.device, batch_size: int, n_figures: int,
                          min_depth: float, max_depth: float, source: Path) -> SegmentationEval:
    """Confusion matrix of `seg` over `frames`, and figure rows for the first `n_figures` frames (with
    the depth of `sde_nets` in [min_depth, max_depth]). `source` names the manifest in errors."""
    cm = ConfusionMatrix(NUM_CLASSES)
    records = frames.to_dict("records")
    samples: list[list[np.ndarray]] = []
    ids: list[str] = []
    for i in track(range(0, len(records), batch_size), "evaluate: segmentation",
                   total=(len(records) + batch_size - 1) // batch_size):
        chunk = records[i:i + batch_size]
        imgs = torch.stack([read_rgb(resolve(r["image"], root)) for r in chunk]).to(device)
        labs = torch.stack([read_label(resolve(r["label"], root)) for r in chunk])
        pred = seg(imgs, with_depth=False)["logits"].argmax(1).cpu()
        if pred.shape[-2:] != labs.shape[-2:]:
            raise SemdepthError(f"{source}: label size {tuple(labs.shape[-2:])} differs from the image "
                                f"size {tuple(pred.shape[-2:])}; rerun downsample")
        cm.update(pred, labs)
        n_fig = min(len(chunk), n_figures - len(samples))
        if n_fig > 0:
            depths = {name: predict_depth(net, imgs[:n_fig], min_depth, max_depth).cpu().numpy()
                      for name, net in sde_nets.items()}
            for k in range(n_fig):
                rgb = (imgs[k].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
                samples.append([rgb, *(colorize_depth(depths[s][k]) for s in SDE_STAGES),
                                colorize(pred[k].numpy()), colorize(labs[k].numpy())])
                ids.append(chunk[k]["id"])
    return SegmentationEval(cm, len(records), samples, ids)


def run_evaluation(inputs: EvalInputs, cfg: EvalConfig, *, hood_fraction: float, min_depth: float,
                   max_depth: float, device: torch.device) -> Evaluation:
    """Segmentation and depth of every model on the annotated val frames.

    min_depth/max_depth: the depth range the networks were trained with (sde.*); cfg.min_depth and
    cfg.max_depth are the evaluation's GT range.
    """
    frames = val_frames(read_table(inputs.manifest))
    if frames.empty:
        raise SemdepthError(f"{inputs.manifest}: no annotated val frames with labels to evaluate")
    seg, seg_info = load_segmenter(inputs.segmenter, device)
    # eval mode: every guidance option reads only the image (`.needs` lists training-batch keys)
    nets = {name: load_sde(path, device)[0] for name, path in inputs.sde_models.items()}
    segmentation = evaluate_segmentation(seg, nets, frames, inputs.manifest.parent, device=device,
                                         batch_size=cfg.batch_size, n_figures=cfg.figures, min_depth=min_depth,
                                         max_depth=max_depth, source=inputs.manifest)
    depth_nets: dict[str, torch.nn.Module] = dict(nets)
    if seg_info.get("multitask"):
        depth_nets["segmenter"] = seg  # its forward returns "disp" like a DepthNet
    pl = inputs.pseudolabels if inputs.pseudolabels.exists() else None
    depth = {name: evaluate_depth_net(net, inputs.manifest, device=device, net_min_depth=min_depth,
                                      net_max_depth=max_depth, eval_cfg=cfg, hood_fraction=hood_fraction,
                                      pseudolabels=pl, batch_size=cfg.batch_size,
                                      description=f"evaluate: depth {name}")
             for name, net in depth_nets.items()}
    return Evaluation(segmentation, depth, seg_info.get("config", {}))


def write_plot_tables(result: Evaluation, out: EvalOutputs) -> list[Path]:
    """The DVC plot CSVs; a placeholder row where a table would be empty (they are declared outputs)."""
    seg = result.segmentation
    write_csv_rows(out.class_iou_csv, class_iou_rows(seg.iou_gt(), TRAIN_NAMES) or [{"class": "none", "iou": 0.0}])
    write_csv_rows(out.confusion_csv, confusion_sample_rows(seg.matrix.matrix, TRAIN_NAMES)
                   or [{"actual": "none", "predicted": "none"}])
    write_csv_rows(out.class_depth_csv, result.class_depth_rows()
                   or [{"class": "none", "abs_rel": 0.0, "stage": "none"}])
    return [out.class_iou_csv, out.confusion_csv, out.class_depth_csv]


def write_figures(result: Evaluation, directory: Path) -> list[Path]:
    """The PNGs of `directory` (replaced atomically), sorted by name."""
    seg = result.segmentation
    present, iou_gt = seg.present, seg.iou_gt()
    with atomic_dir(directory) as tmp:
        if seg.samples:
            save_grid(tmp / "samples.png", seg.samples, SAMPLE_TITLES, seg.sample_ids)
        names = [TRAIN_NAMES[c] for c in range(NUM_CLASSES) if present[c]]
        save_bar(tmp / "class_iou.png", names, [float(np.nan_to_num(iou_gt[c])) for c in range(NUM_CLASSES)
                                                 if present[c]],
                 f"val IoU per class (mIoU {seg.matrix.miou('gt'):.3f})", "IoU")
        save_confusion(tmp / "confusion.png", seg.matrix.matrix, TRAIN_NAMES, "val confusion (rows: ground truth)")
        # always written: they are declared DVC outputs (empty bars when val has no GT depth)
        cls = sorted({r["class"] for r in result.class_depth_rows()}, key=TRAIN_NAMES.index) or ["none"]
        for name in SDE_STAGES:
            vals = result.depth[name].get("class_abs_rel", {})
            save_bar(tmp / f"class_abs_rel_{name}.png", cls, [vals.get(c, 0.0) for c in cls],
                     f"AbsRel per class, SDE {name}", "AbsRel", xlim=None)
    return sorted(directory.glob("*.png"))
