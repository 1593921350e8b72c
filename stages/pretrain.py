"""pretrain stage: stage-1 self-supervised depth + pose on all train triplets (METHOD.md §3).

Reads: sde, seed, data.hood_fraction, eval.{min_depth,max_depth,edge_band}; data/prepared/,
data/pseudolabels/ (guidance and class labels for evaluation), data/models/pseudolabel.pt
(sde.pretrained: source). Writes: data/models/sde_stage1.pt, metrics/pretrain.json (val depth metrics,
the row-median prior unscaled and median-scaled, training time and speed),
metrics/plots/pretrain_loss.csv.
"""
from __future__ import annotations

from pathlib import Path

from stages._common import stage

OUT_MODEL = Path("data/models/sde_stage1.pt")


def main(params_path: str | Path) -> None:
    from stages import sde_common

    with stage("pretrain", params_path, ["sde", "data", "eval"]) as ctx:
        summary, depth_net = sde_common.train_and_save(ctx, OUT_MODEL)
        if depth_net is None:  # non-zero DDP rank: rank 0 evaluates and writes metrics
            return
        val = sde_common.evaluate(ctx, depth_net, "pretrain: val depth")
        prior = sde_common.prior(ctx)
        metrics = {**sde_common.headline(val, prior), "val": val, "row_median_prior": prior, "train": summary,
                   "total_seconds": round(ctx.elapsed(), 2)}
        ctx.write_metrics(metrics)
        ctx.tracker.log_artifact(OUT_MODEL)
        ctx.log.info("pretrain: val AbsRel %.4f (row-median prior %.4f unscaled, %.4f median-scaled), "
                     "%.2f steps/s", val["abs_rel"], prior["unscaled"]["abs_rel"],
                     prior["median_scaled"]["abs_rel"], summary["steps_per_s"])
