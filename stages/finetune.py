"""finetune stage: semi-supervised segmentation with SDE transfer, multi-task learning, DepthMix and a
mean teacher (docs/method.md §7; Hoyer et al. 2021 §3-4).

The frames, the init choices and the training run are semdepth/training/segmenter_run.py.
Writes data/models/segmenter.pt, metrics/finetune.json, metrics/plots/finetune_loss.csv.
Resumable: a killed run restarts from its last checkpoint (semdepth/training/loop.py).
"""
from __future__ import annotations

from pathlib import Path

from semdepth.layout import MANIFEST, PSEUDOLABEL_MODEL, RESUME_ROOT, SDE_STAGE2, SEGMENTER, SELECTION, loss_csv
from semdepth.training import ddp
from semdepth.training.segmenter_run import FinetunePaths, train_segmenter, write_outputs
from stages._common import is_rank0, stage

PATHS = FinetunePaths(manifest=MANIFEST, selection=SELECTION, sde_model=SDE_STAGE2, pseudolabel_model=PSEUDOLABEL_MODEL,
                      out_model=SEGMENTER, loss_csv=loss_csv("finetune"), resume_root=RESUME_ROOT)


def main(params_path: str | Path = "params.yaml") -> None:
    with stage("finetune", params_path) as ctx:
        run = train_segmenter(ctx.params, PATHS, ctx.device, tracker=ctx.tracker)
        if is_rank0():
            metrics = {**write_outputs(run), "time_s": ctx.elapsed()}
            ctx.write_metrics(metrics)
            ctx.tracker.log_artifact(PATHS.loss_csv)
            teacher = metrics["val"]["teacher"].get("miou", float("nan"))
            ctx.log.info("finetune: val mIoU %.4f (teacher %.4f) in %.0f s",
                         metrics["val"]["student"].get("miou", float("nan")), teacher, metrics["time_s"])
        ddp.barrier()
        ddp.shutdown()
