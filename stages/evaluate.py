"""evaluate stage: the final numbers (METHOD.md §7).

- Segmentation of data/models/segmenter.pt on the annotated val frames at the working resolution
  against the nearest-resized labels (Hoyer's protocol): confusion matrix, per-class IoU, mIoU over
  the classes present in the GT (`miou`) and Cityscapes' convention (`miou_cityscapes`: classes in GT
  or prediction, what `cityscapesscripts` reports), pixel accuracy.
- Depth of both SDE stages (data/models/sde_stage1.pt, sde_stage2.pt), and of the segmenter's own
  depth branch in multi-task mode: the 7 metrics over all valid pixels, AbsRel per class, on moving
  objects and in a band around semantic edges (semdepth/metrics/depth_eval.py).

Writes metrics/eval.json; DVC plots metrics/plots/eval_class_iou.csv (class, iou),
eval_confusion.csv (actual, predicted: one row per pixel of a proportional, deterministic sample of at
most 20k pixels, because DVC's confusion template counts rows), eval_class_depth.csv (class, abs_rel,
stage); PNGs in metrics/figures/eval/: qualitative rows (input | depth stage 1 | depth stage 2 |
predicted segmentation | GT), per-class IoU bars, the confusion matrix.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from semdepth import SemdepthError
from semdepth.io import read_table, resolve
from stages._common import FIGURES_DIR, METRICS_DIR, PLOTS_DIR, stage

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.parquet"
PSEUDOLABELS = Path("data/pseudolabels/pseudolabels.parquet")
SDE_MODELS = {"stage1": Path("data/models/sde_stage1.pt"), "stage2": Path("data/models/sde_stage2.pt")}
SEG_MODEL = Path("data/models/segmenter.pt")
FIG_DIR = FIGURES_DIR / "eval"
CLASS_IOU_CSV = PLOTS_DIR / "eval_class_iou.csv"
CONFUSION_CSV = PLOTS_DIR / "eval_confusion.csv"
CLASS_DEPTH_CSV = PLOTS_DIR / "eval_class_depth.csv"
EVAL_JSON = METRICS_DIR / "eval.json"
MAX_CONFUSION_ROWS = 20_000


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


def val_frames(manifest: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """Annotated target-domain val frames with labels, sorted by id."""
    m = manifest
    sel = (m["split"] == "val") & (m["domain"] == "target") & m["annotated"].astype(bool) & m["label"].notna()
    return m[sel].sort_values("id").reset_index(drop=True)


def main(params_path: str | Path = "params.yaml") -> None:
    import torch

    from semdepth.data.frames import read_label, read_rgb
    from semdepth.data.labels import NUM_CLASSES, TRAIN_NAMES, colorize
    from semdepth.io import atomic_dir, write_csv_rows, write_json
    from semdepth.metrics.depth_eval import evaluate_depth_net, predict_depth
    from semdepth.metrics.segmentation import ConfusionMatrix, class_iou_rows
    from semdepth.models.sde import load_sde
    from semdepth.models.segmenter import load_segmenter
    from semdepth.progress import track
    from semdepth.tracking import flat_metrics
    from semdepth.viz import colorize_depth, save_bar, save_confusion, save_grid

    with stage("evaluate", params_path, ["eval"]) as ctx:
        p, ev = ctx.params, ctx.params.eval
        started = time.perf_counter()
        device = ctx.device
        manifest = read_table(MANIFEST)
        frames = val_frames(manifest)
        if frames.empty:
            raise SemdepthError(f"{MANIFEST}: no annotated val frames with labels to evaluate")
        seg, seg_info = load_segmenter(SEG_MODEL, device)
        # eval mode: every guidance option reads only the image (`.needs` lists training-batch keys)
        nets = {name: load_sde(path, device)[0] for name, path in SDE_MODELS.items()}

        # ---- segmentation ------------------------------------------------------------------
        cm = ConfusionMatrix(NUM_CLASSES)
        records = frames.to_dict("records")
        bs = ev.batch_size
        fig_rows: list[list[np.ndarray]] = []
        fig_ids: list[str] = []
        with torch.no_grad():
            for i in track(range(0, len(records), bs), "evaluate: segmentation",
                           total=(len(records) + bs - 1) // bs):
                chunk = records[i:i + bs]
                imgs = torch.stack([read_rgb(resolve(r["image"], PREPARED)) for r in chunk]).to(device)
                labs = torch.stack([read_label(resolve(r["label"], PREPARED)) for r in chunk])
                pred = seg(imgs, with_depth=False)["logits"].argmax(1).cpu()
                if pred.shape[-2:] != labs.shape[-2:]:
                    raise SemdepthError(f"{MANIFEST}: label size {tuple(labs.shape[-2:])} differs from the image "
                                        f"size {tuple(pred.shape[-2:])}; rerun downsample")
                cm.update(pred, labs)
                n_fig = min(len(chunk), ev.figures - len(fig_rows))
                if n_fig > 0:
                    depths = {name: predict_depth(net, imgs[:n_fig], p.sde.min_depth, p.sde.max_depth).cpu().numpy()
                              for name, net in nets.items()}
                    for k in range(n_fig):
                        rgb = (imgs[k].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
                        fig_rows.append([rgb, colorize_depth(depths["stage1"][k]), colorize_depth(depths["stage2"][k]),
                                         colorize(pred[k].numpy()), colorize(labs[k].numpy())])
                        fig_ids.append(chunk[k]["id"])
        summary = cm.summary(TRAIN_NAMES)
        present = cm.matrix.sum(1) > 0
        segm = {"miou": cm.miou("gt"), "miou_cityscapes": cm.miou("union"),
                "pixel_accuracy": summary["pixel_accuracy"], "class_iou": summary["class_iou"],
                "classes_in_gt": [TRAIN_NAMES[c] for c in range(NUM_CLASSES) if present[c]],
                "pixels": summary["pixels"], "n_images": len(records)}

        # ---- depth ---------------------------------------------------------------------------
        depth_nets = dict(nets)
        if seg_info.get("multitask"):
            depth_nets["segmenter"] = seg  # its forward returns "disp" like a DepthNet
        depth: dict[str, dict] = {}
        pl = PSEUDOLABELS if PSEUDOLABELS.exists() else None
        for name, net in depth_nets.items():
            depth[name] = evaluate_depth_net(net, MANIFEST, device=device, net_min_depth=p.sde.min_depth,
                                             net_max_depth=p.sde.max_depth, eval_cfg=ev,
                                             hood_fraction=p.data.hood_fraction, pseudolabels=pl,
                                             batch_size=bs, description=f"evaluate: depth {name}")

        # ---- outputs -------------------------------------------------------------------------
        ious = cm.iou()
        iou_gt = np.where(present, ious, np.nan)
        write_csv_rows(CLASS_IOU_CSV, class_iou_rows(iou_gt, TRAIN_NAMES) or [{"class": "none", "iou": 0.0}])
        write_csv_rows(CONFUSION_CSV, confusion_sample_rows(cm.matrix, TRAIN_NAMES)
                       or [{"actual": "none", "predicted": "none"}])
        depth_rows = [{"class": c, "abs_rel": v, "stage": name} for name in ("stage1", "stage2")
                      for c, v in depth[name].get("class_abs_rel", {}).items()]
        write_csv_rows(CLASS_DEPTH_CSV, depth_rows or [{"class": "none", "abs_rel": 0.0, "stage": "none"}])

        with atomic_dir(FIG_DIR) as tmp:
            if fig_rows:
                save_grid(tmp / "samples.png", fig_rows,
                          ["input", "depth stage 1", "depth stage 2", "segmentation", "ground truth"], fig_ids)
            names = [TRAIN_NAMES[c] for c in range(NUM_CLASSES) if present[c]]
            save_bar(tmp / "class_iou.png", names, [float(np.nan_to_num(iou_gt[c])) for c in range(NUM_CLASSES)
                                                     if present[c]],
                     f"val IoU per class (mIoU {segm['miou']:.3f})", "IoU")
            save_confusion(tmp / "confusion.png", cm.matrix, TRAIN_NAMES, "val confusion (rows: ground truth)")
            # always written: they are declared DVC outputs (empty bars when val has no GT depth)
            cls = sorted({r["class"] for r in depth_rows}, key=TRAIN_NAMES.index) or ["none"]
            for name in ("stage1", "stage2"):
                vals = depth[name].get("class_abs_rel", {})
                save_bar(tmp / f"class_abs_rel_{name}.png", cls, [vals.get(c, 0.0) for c in cls],
                         f"AbsRel per class, SDE {name}", "AbsRel", xlim=None)

        metrics = {"segmentation": segm, "depth": depth,
                   "miou": segm["miou"], "miou_cityscapes": segm["miou_cityscapes"],
                   "abs_rel": {name: d["abs_rel"] for name, d in depth.items()},
                   "segmenter": {k: seg_info.get("config", {}).get(k) for k in ("init", "multitask", "mix", "steps")},
                   "time_s": time.perf_counter() - started}
        # dvc.yaml names this file metrics/eval.json (not <stage>.json, what ctx.write_metrics writes).
        write_json(EVAL_JSON, metrics)
        ctx.tracker.log_metrics(flat_metrics(metrics))
        ctx.tracker.log_artifact(EVAL_JSON)
        for f in (CLASS_IOU_CSV, CONFUSION_CSV, CLASS_DEPTH_CSV):
            ctx.tracker.log_artifact(f)
        for f in sorted(FIG_DIR.glob("*.png")):
            ctx.tracker.log_artifact(f)
        ctx.log.info("evaluate: mIoU %.4f (Cityscapes convention %.4f), AbsRel %s", segm["miou"],
                     segm["miou_cityscapes"], {k: round(v, 4) for k, v in metrics["abs_rel"].items()})
