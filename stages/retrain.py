"""retrain stage: stage-2 depth, trained from scratch on the frames the filter kept (Guizilini §4.3).

Reads: sde, seed, data.hood_fraction, eval.*; data/filter/frames.parquet (column `kept`),
data/prepared/, data/pseudolabels/, data/models/sde_stage1.pt (evaluated side by side).
Writes: data/models/sde_stage2.pt, metrics/retrain.json (stage-2 and stage-1 val metrics, the
row-median prior, frames kept), metrics/plots/retrain_loss.csv.
"""
from __future__ import annotations

from pathlib import Path

from semdepth import SemdepthError
from stages._common import stage

OUT_MODEL = Path("data/models/sde_stage2.pt")
STAGE1 = Path("data/models/sde_stage1.pt")
FRAMES = Path("data/filter/frames.parquet")


def kept_ids(path: Path = FRAMES) -> tuple[list[str], int]:
    from semdepth.io import read_table

    df = read_table(path)
    if "kept" not in df or "id" not in df:
        raise SemdepthError(f"{path}: needs columns id and kept")
    kept = df.loc[df["kept"].astype(bool), "id"].tolist()
    if not kept:
        raise SemdepthError(f"{path}: the filter kept no frames; loosen filter.threshold_px or filter.margin")
    return kept, len(df)


def main(params_path: str | Path) -> None:
    from semdepth.models.sde import load_sde
    from stages import sde_common

    with stage("retrain", params_path, ["sde", "data", "eval"]) as ctx:
        ids, total = kept_ids()
        ctx.log.info("retrain: %d of %d frames kept by the filter", len(ids), total)
        summary, depth_net = sde_common.train_and_save(ctx, OUT_MODEL, ids)
        if depth_net is None:
            return
        val = sde_common.evaluate(ctx, depth_net, "retrain: val depth (stage 2)")
        stage1_net, _, _ = load_sde(STAGE1, ctx.device)
        val1 = sde_common.evaluate(ctx, stage1_net, "retrain: val depth (stage 1)")
        prior = sde_common.prior(ctx)
        metrics = {**sde_common.headline(val, prior), "stage1_abs_rel": val1["abs_rel"],
                   "val": val, "stage1_val": val1, "row_median_prior": prior, "train": summary,
                   "frames_kept": len(ids), "frames_total": total, "total_seconds": round(ctx.elapsed(), 2)}
        ctx.write_metrics(metrics)
        ctx.tracker.log_artifact(OUT_MODEL)
        ctx.log.info("retrain: val AbsRel stage 2 %.4f vs stage 1 %.4f (prior %.4f)", val["abs_rel"],
                     val1["abs_rel"], prior["unscaled"]["abs_rel"])
