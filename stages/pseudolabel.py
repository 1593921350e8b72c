"""pseudolabel stage: DeepLabV3 pseudo-labels for every prepared target-domain frame.

Reads `pseudolabel` (+ seed) and data/prepared/. Writes data/pseudolabels/ (PNGs + pseudolabels.parquet),
data/models/pseudolabel.pt, metrics/pseudolabel.json, metrics/plots/pseudolabel_loss.csv.
Weights: `train` (on the labelled source-domain frames), `torchvision-coco` (torch's cache, binary
only) or a local checkpoint path. Pseudo-labels are scored against GT wherever the target has labels,
next to a trivial baseline (the source domain's per-position majority class).
"""
from __future__ import annotations

from pathlib import Path

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.parquet"
OUT_DIR = Path("data/pseudolabels")
TABLE_NAME = "pseudolabels.parquet"
CHECKPOINT = Path("data/models/pseudolabel.pt")
LOSS_CSV = Path("metrics/plots/pseudolabel_loss.csv")
_REQUIRED = ("id", "split", "domain", "city", "image", "label", "height", "width")


def _load_manifest():
    from semdepth import SemdepthError
    from semdepth.io import read_table

    df = read_table(MANIFEST)
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise SemdepthError(f"{MANIFEST}: missing columns {', '.join(missing)} (rerun downsample)")
    return df


def _paths(df, column: str) -> list:
    from semdepth.io import resolve

    return [resolve(v, PREPARED) if isinstance(v, str) else None for v in df[column]]


def main(params_path: str | Path) -> None:
    import torch

    from semdepth import SemdepthError
    from semdepth.config import to_dict
    from semdepth.io import atomic_dir, atomic_file, write_fingerprint, write_table
    from semdepth.models.deeplab import DeepLab, checkpoint_dict, load_checkpoint, load_coco
    from semdepth.pseudolabel.infer import SplitScores, positional_prior, run_inference
    from semdepth.pseudolabel.train import train_deeplab
    from semdepth.training.resume import Resumer
    from stages._common import stage

    with stage("pseudolabel", params_path, ["pseudolabel"]) as ctx:
        cfg = ctx.params.pseudolabel
        manifest = _load_manifest()
        target = manifest[manifest["domain"] == "target"].reset_index(drop=True)
        if target.empty:
            raise SemdepthError(f"{MANIFEST}: no target-domain frames to pseudo-label")
        hw = (int(target["height"].iloc[0]), int(target["width"].iloc[0]))
        source = manifest[(manifest["domain"] == "source") & manifest["label"].notna()].reset_index(drop=True)
        workers = ctx.params.compute.num_workers
        metrics: dict = {"model": cfg.model, "weights": cfg.weights}

        # ---- weights
        training = None
        if cfg.weights == "train":
            if source.empty:
                raise SemdepthError(f"{MANIFEST}: no labelled source-domain frames to train on "
                                    f"(pseudolabel.weights: train); prepare the 'source' split or set "
                                    f"pseudolabel.weights to torchvision-coco or a checkpoint path")
            model = DeepLab(cfg.model)
            resumer = Resumer("pseudolabel", {"cfg": to_dict(cfg), "seed": ctx.params.seed,
                                              "frames": sorted(source["id"].tolist())})
            ctx.log.info("training %s on %d labelled source frames for %d steps", cfg.model, len(source), cfg.steps)
            training = train_deeplab(model, _paths(source, "image"), _paths(source, "label"), cfg, hw,
                                     seed=ctx.params.seed, device=ctx.device, num_workers=workers,
                                     tracker=ctx.tracker, resumer=resumer,
                                     checkpoint_every=max(50, cfg.steps // 10))
            resumer.done()
            s = training.loss_log.summary()
            metrics["training"] = {"steps": training.steps, "source_frames": len(source),
                                   "seconds": round(training.seconds, 3),
                                   "steps_per_s": round(training.steps_per_s, 4), "resumed_from": training.resumed_from,
                                   "loss_first": s.get("first"), "loss_last": s.get("last"), "loss_min": s.get("min")}
        elif cfg.weights == "torchvision-coco":
            model = load_coco(cfg.model)
        else:
            model = load_checkpoint(cfg.weights, cfg.model)
        if model.voc:
            ctx.log.warning("%s gives VOC classes: writing the binary foreground map (any VOC class) and "
                            "confidence only; no 19-class train-id map and no mIoU", cfg.weights)

        # ---- inference on every target frame (one atomic output directory)
        ids = target["id"].tolist()
        splits = target["split"].tolist()
        rel_names = [f"{sp}/{c}/{i}" for sp, c, i in zip(splits, target["city"], ids)]
        labels = _paths(target, "label")
        with atomic_dir(OUT_DIR) as tmp:
            res = run_inference(model, ids, splits, _paths(target, "image"), labels, tmp, rel_names,
                                batch_size=cfg.infer_batch_size, device=ctx.device, num_workers=workers)
            import pandas as pd

            table = pd.DataFrame(res.rows, columns=["id", "split", "trainid", "confidence", "foreground"])
            write_table(table, tmp / TABLE_NAME)
            write_fingerprint(tmp)
        with atomic_file(CHECKPOINT) as tmp:
            torch.save(checkpoint_dict(model), tmp)

        # ---- scores: pseudo-labels and the trivial baseline on every labelled target frame
        semantic = not model.voc
        metrics.update({"frames": res.frames, "semantic_map": semantic,
                        "frames_per_s": round(res.frames / res.net_seconds, 2) if res.net_seconds else None,
                        "frames_per_s_total": round(res.frames / res.total_seconds, 2),
                        "device": str(ctx.device)})
        merged = SplitScores()
        for sp, sc in sorted(res.scores.items()):
            metrics[sp] = sc.summary(semantic)
            merged.semantic.merge(sc.semantic)
            merged.binary.merge(sc.binary)
            merged.frames += sc.frames
        if merged.frames:
            metrics["all_labelled"] = merged.summary(semantic)
        prior_src = [p for p in _paths(source, "label") if p is not None]
        if prior_src and merged.frames:
            from semdepth.data.frames import read_label

            majority, fg_prior = positional_prior(prior_src, hw)
            base: dict[str, SplitScores] = {}
            for sp, lp in zip(splits, labels):
                if lp is not None:
                    base.setdefault(sp, SplitScores()).update(majority, fg_prior, read_label(lp))
            metrics["baseline"] = {"kind": "per-pixel majority of the source-domain labels",
                                   **{sp: _short(sc.summary(True)) for sp, sc in sorted(base.items())}}
        if training is not None:
            training.loss_log.write(LOSS_CSV)
        else:  # the plot is a declared output: an empty curve says "nothing was trained"
            with atomic_file(LOSS_CSV) as tmp:
                tmp.write_text("step,loss\n")
        ctx.tracker.log_artifact(LOSS_CSV)
        ctx.write_metrics(metrics)
        _log_summary(ctx, metrics)


def _short(summary: dict) -> dict:
    return {k: summary.get(k) for k in ("frames", "miou", "pixel_accuracy", "foreground_iou", "binary_miou")}


def _log_summary(ctx, m: dict) -> None:
    for sp in ("val", "train"):
        if sp in m:
            base = m.get("baseline", {}).get(sp, {})
            ctx.log.info("%s: mIoU %s (baseline %s), foreground IoU %s (baseline %s) on %d frames", sp,
                         _fmt(m[sp].get("miou")), _fmt(base.get("miou")), _fmt(m[sp].get("foreground_iou")),
                         _fmt(base.get("foreground_iou")), m[sp]["frames"])
    ctx.log.info("%d frames, %.1f frames/s (network), %.1f frames/s overall", m["frames"],
                 m["frames_per_s"] or 0.0, m["frames_per_s_total"])


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
