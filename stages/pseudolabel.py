"""pseudolabel stage: DeepLabV3 pseudo-labels for every prepared target-domain frame.

Reads `pseudolabel` (+ seed) and data/prepared/, and data.raw_dir when pseudolabel.height/width is not
0 x 0 (the network then runs on raw frames at that size; maps are resized to the working one). Writes
data/pseudolabels/ (PNGs + pseudolabels.parquet), data/models/pseudolabel.pt, metrics/pseudolabel.json,
metrics/plots/pseudolabel_loss.csv.
Weights: `train` (on the labelled source-domain frames), `torchvision-coco` (torch's cache, binary
only) or a local checkpoint path. Pseudo-labels are scored against GT wherever the target has labels,
next to a trivial baseline (the source domain's per-position majority class); semdepth/pseudolabel/run.py.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.layout import MANIFEST, PSEUDOLABEL_MODEL, PSEUDOLABELS, PSEUDOLABELS_DIR, RESUME_ROOT, loss_csv
from semdepth.pseudolabel.run import PseudolabelPaths, log_summary, run_pseudolabel
from stages._common import stage

PATHS = PseudolabelPaths(manifest=MANIFEST, out_dir=PSEUDOLABELS_DIR, table=PSEUDOLABELS.name,
                         checkpoint=PSEUDOLABEL_MODEL, loss_csv=loss_csv("pseudolabel"), resume_root=RESUME_ROOT)


def main(params_path: str | Path) -> None:
    with stage("pseudolabel", params_path) as ctx:
        metrics = run_pseudolabel(PATHS, ctx.params.pseudolabel, seed=ctx.params.seed, device=ctx.device,
                                  num_workers=ctx.params.compute.num_workers, tracker=ctx.tracker,
                                  raw_dir=ctx.params.data.raw_dir)
        ctx.tracker.log_artifact(PATHS.loss_csv)
        ctx.write_metrics(metrics)
        log_summary(ctx.log, metrics)
