"""evaluate stage: the final numbers (docs/method.md §8), by semdepth/evaluation.py.

Reads eval, data.hood_fraction, sde.min_depth, sde.max_depth; the annotated val frames of
data/prepared/, data/pseudolabels/ (class labels for per-class depth), both SDE stages and the
segmenter. Writes metrics/eval.json (segmentation: mIoU in both conventions, per-class IoU, pixel
accuracy; depth of every model: the 7 metrics, per class, moving objects, edge band); DVC plots
metrics/plots/eval_class_iou.csv (class, iou), eval_confusion.csv (actual, predicted: one row per
pixel of a proportional, deterministic sample of at most 20k pixels), eval_class_depth.csv (class,
abs_rel, stage); PNGs in metrics/figures/eval/: qualitative rows (input | depth stage 1 | depth
stage 2 | predicted segmentation | GT), per-class IoU and AbsRel bars, the confusion matrix.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.evaluation import EvalInputs, EvalOutputs, run_evaluation, write_figures, write_plot_tables
from semdepth.layout import MANIFEST, PLOTS_DIR, PSEUDOLABELS, SDE_STAGE1, SDE_STAGE2, SEGMENTER, figures_dir
from stages._common import stage

INPUTS = EvalInputs(manifest=MANIFEST, pseudolabels=PSEUDOLABELS, segmenter=SEGMENTER,
                    sde_models={"stage1": SDE_STAGE1, "stage2": SDE_STAGE2})
OUTPUTS = EvalOutputs(class_iou_csv=PLOTS_DIR / "eval_class_iou.csv", confusion_csv=PLOTS_DIR / "eval_confusion.csv",
                      class_depth_csv=PLOTS_DIR / "eval_class_depth.csv", figures=figures_dir("eval"))


def main(params_path: str | Path = "params.yaml") -> None:
    with stage("evaluate", params_path) as ctx:
        p = ctx.params
        result = run_evaluation(INPUTS, p.eval, hood_fraction=p.data.hood_fraction, min_depth=p.sde.min_depth,
                                max_depth=p.sde.max_depth, device=ctx.device)
        artifacts = write_plot_tables(result, OUTPUTS) + write_figures(result, OUTPUTS.figures)
        metrics = result.metrics(ctx.elapsed())
        ctx.write_metrics(metrics)  # metrics/eval.json
        for f in artifacts:
            ctx.tracker.log_artifact(f)
        ctx.log.info("evaluate: mIoU %.4f (Cityscapes convention %.4f), AbsRel %s", metrics["miou"],
                     metrics["miou_cityscapes"], {k: round(v, 4) for k, v in metrics["abs_rel"].items()})
