"""retrain stage: stage-2 depth, trained from scratch on the frames the filter kept (Guizilini §4.3).

When the filter kept every training frame, training would reproduce stage 1 bit for bit; stage 1 is
then copied as stage 2 instead (`shortcut` in the metrics). The work is semdepth/training/sde_run.py
(`retrain`). Writes data/models/sde_stage2.pt, metrics/retrain.json (stage-2 and stage-1 val
metrics, the row-median prior, frames kept, shortcut), metrics/plots/retrain_loss.csv.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.layout import (FILTER_FRAMES, MANIFEST, PSEUDOLABEL_MODEL, PSEUDOLABELS, RESUME_ROOT, SDE_STAGE1,
                             SDE_STAGE2, loss_csv)
from semdepth.training import sde_run
from stages._common import stage

PATHS = sde_run.SdePaths(manifest=MANIFEST, pseudolabels=PSEUDOLABELS, pseudolabel_model=PSEUDOLABEL_MODEL,
                         out_model=SDE_STAGE2, loss_csv=loss_csv("retrain"), resume_root=RESUME_ROOT,
                         stage1=SDE_STAGE1, filter_frames=FILTER_FRAMES)


def main(params_path: str | Path) -> None:
    with stage("retrain", params_path) as ctx:
        metrics = sde_run.retrain(ctx.params, PATHS, ctx.device, ctx.tracker)
        if metrics is None:  # non-zero DDP rank: rank 0 evaluates and writes metrics
            return
        metrics["total_seconds"] = round(ctx.elapsed(), 2)
        ctx.write_metrics(metrics)
        ctx.tracker.log_artifact(PATHS.out_model)
        ctx.log.info("retrain: val AbsRel stage 2 %.4f vs stage 1 %.4f (prior %.4f)%s", metrics["abs_rel"],
                     metrics["stage1_abs_rel"], metrics["prior_abs_rel_unscaled"],
                     " (stage 1 copied)" if metrics["shortcut"] else "")
