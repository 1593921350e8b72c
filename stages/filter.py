"""filter stage: drop training frames whose stage-1 depth puts pixels below the ground (docs/method.md §5).

Reads seed, filter, data.hood_fraction; data/prepared/ (the training triplets), data/pseudolabels/
(road pixels), data/models/sde_stage1.pt. Writes data/filter/frames.parquet (docs/contracts.md
"Downstream tables"; retrain reads `kept`; with GT depth and moving masks also the measured artifact,
predicted/true depth on moving and static pixels), metrics/filter.json (shares, counts and, on
SynthCity, precision/recall of the drops against the lead-car snippets and the `artifact` summary),
metrics/figures/filter/dropped.png, and the margin/threshold sweep: metrics/plots/filter_sweep.csv
(a DVC plot) and metrics/figures/filter/sweep.png.
The analysis is semdepth/filtering.py; the ground-plane rules are semdepth/geometry/ground.py.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.filtering import FilterInputs, run_filter, save_figure, save_sweep_figure
from semdepth.io import atomic_dir, write_csv_rows, write_table
from semdepth.layout import FILTER_DIR, FILTER_FRAMES, MANIFEST, PLOTS_DIR, PSEUDOLABELS, SDE_STAGE1, figures_dir
from stages._common import stage

INPUTS = FilterInputs(manifest=MANIFEST, pseudolabels=PSEUDOLABELS, model=SDE_STAGE1)
FIGURE = figures_dir("filter") / "dropped.png"
SWEEP_FIGURE = figures_dir("filter") / "sweep.png"
SWEEP_CSV = PLOTS_DIR / "filter_sweep.csv"


def main(params_path: str | Path) -> None:
    with stage("filter", params_path) as ctx:
        p = ctx.params
        run = run_filter(INPUTS, p.filter, hood_fraction=p.data.hood_fraction, seed=p.seed, device=ctx.device,
                         num_workers=p.compute.num_workers)
        with atomic_dir(FILTER_DIR) as tmp:
            write_table(run.table, tmp / FILTER_FRAMES.name)
        write_csv_rows(SWEEP_CSV, run.sweep.to_dict("records"))
        with atomic_dir(FIGURE.parent) as tmp:
            save_figure(run, tmp / FIGURE.name)
            save_sweep_figure(run, p.filter, tmp / SWEEP_FIGURE.name)
        ctx.tracker.log_artifact(FIGURE)
        ctx.tracker.log_artifact(SWEEP_FIGURE)
        m = run.metrics
        ctx.write_metrics(m)
        sc = m.get("synthcity", {})
        ctx.log.info("filter: %d/%d frames dropped (%.1f%%), %d without enough ground; lead-car recall %s, "
                     "precision %s", m["dropped"], m["frames"], 100 * m["share_dropped"], m["not_enough_ground"],
                     sc.get("recall"), sc.get("precision"))
        art = {k: v.get("moving_ratio_median") for k, v in m.get("artifact", {}).items() if isinstance(v, dict)}
        ctx.log.info("filter: median predicted/true depth on moving pixels: lead-car frames %s, clean %s",
                     art.get("lead_car"), art.get("clean"))
