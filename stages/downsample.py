"""downsample stage: a Cityscapes-layout root (data.raw_dir) -> data/prepared/ at the working resolution
+ manifest (semdepth/data/prepare.py), in `data.workers` processes (0 = all cores, 1 = in this process).
The whole of data/prepared/ appears only when every snippet succeeded.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.data.prepare import prepare
from semdepth.layout import MANIFEST, PREPARED
from semdepth.runtime import cpu_workers
from stages._common import stage


def main(params_path: str | Path = "params.yaml") -> None:
    with stage("downsample", params_path) as ctx:
        cfg = ctx.params.data
        metrics = prepare(cfg.raw_dir, PREPARED, cfg.height, cfg.width, cfg.frame_offsets, cfg.splits,
                          cpu_workers(cfg.workers), log=ctx.log, manifest_name=MANIFEST.name)
        ctx.write_metrics(metrics)
        ctx.log.info("prepared %d frames (%s), %d snippet(s) skipped, %.1f frames/s",
                     metrics["frames_total"], ", ".join(f"{k} {v}" for k, v in metrics["frames"].items()),
                     metrics["snippets_skipped"], metrics["frames_per_s"])
