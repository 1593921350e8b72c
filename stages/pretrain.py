"""pretrain stage: stage-1 self-supervised depth + pose on all train triplets (docs/method.md §3).

The work is semdepth/training/sde_run.py (`pretrain`). Writes data/models/sde_stage1.pt,
metrics/pretrain.json (val depth metrics, the row-median prior unscaled and median-scaled, training
time and speed), metrics/plots/pretrain_loss.csv.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.layout import MANIFEST, PSEUDOLABEL_MODEL, PSEUDOLABELS, RESUME_ROOT, SDE_STAGE1, loss_csv
from semdepth.training import sde_run
from stages._common import stage

PATHS = sde_run.SdePaths(manifest=MANIFEST, pseudolabels=PSEUDOLABELS, pseudolabel_model=PSEUDOLABEL_MODEL,
                         out_model=SDE_STAGE1, loss_csv=loss_csv("pretrain"), resume_root=RESUME_ROOT)


def main(params_path: str | Path) -> None:
    with stage("pretrain", params_path) as ctx:
        metrics = sde_run.pretrain(ctx.params, PATHS, ctx.device, ctx.tracker)
        if metrics is None:  # non-zero DDP rank: rank 0 evaluates and writes metrics
            return
        metrics["total_seconds"] = round(ctx.elapsed(), 2)
        ctx.write_metrics(metrics)
        ctx.tracker.log_artifact(PATHS.out_model)
        prior = metrics["row_median_prior"]
        ctx.log.info("pretrain: val AbsRel %.4f (row-median prior %.4f unscaled, %.4f median-scaled), "
                     "%.2f steps/s", metrics["abs_rel"], prior["unscaled"]["abs_rel"],
                     prior["median_scaled"]["abs_rel"], metrics["train"]["steps_per_s"] or float("nan"))
