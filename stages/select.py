"""select stage: choose which target-domain train frames a person should annotate (Hoyer Alg. 1).

Reads select, data.hood_fraction; data/prepared/ (the pool: annotated target-domain train frames),
data/models/sde_stage1.pt (the teacher). Writes data/selection/selection.parquet (id, rank, round,
distance, uncertainty), which finetune reads directly, and metrics/select.json (coverage, the final
student's error on the pool, class coverage of the labels, which are never read to choose).
The selection is semdepth/selection/run.py.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.io import atomic_dir, write_table
from semdepth.layout import MANIFEST, SDE_STAGE1, SELECTION, SELECTION_DIR
from semdepth.selection.run import run_selection
from stages._common import stage


def main(params_path: str | Path) -> None:
    with stage("select", params_path) as ctx:
        cfg = ctx.params.select
        run = run_selection(MANIFEST, SDE_STAGE1, cfg, hood_fraction=ctx.params.data.hood_fraction,
                            device=ctx.device)
        metrics = {**run.metrics, "time_s": ctx.elapsed()}
        # outputs last: anything above failing (e.g. an unreadable label) leaves nothing behind
        with atomic_dir(SELECTION_DIR) as tmp:
            write_table(run.table, tmp / SELECTION.name)
        ctx.write_metrics(metrics)
        ctx.log.info("selected %d of %d frames (%s) in %.1fs; coverage distance %.3f", metrics["n_labels"],
                     metrics["pool_size"], cfg.method, metrics["time_s"], metrics["coverage_distance_mean"])
