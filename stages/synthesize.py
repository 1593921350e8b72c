"""synthesize stage: render SynthCity (the built-in Cityscapes-layout dataset) into data/raw/synthcity/.

Reads params `synth` (summary: semdepth/data/synthcity/summary.py). The whole output directory
appears only when every snippet was written (semdepth.io.atomic_dir), so a killed run leaves
nothing DVC could mistake for a finished stage.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.data.synthcity.summary import dataset_metrics
from semdepth.data.synthcity.writer import write_dataset
from semdepth.io import atomic_dir
from semdepth.layout import RAW_SYNTHCITY
from stages._common import stage


def main(params_path: str | Path = "params.yaml") -> None:
    with stage("synthesize", params_path) as ctx:
        with atomic_dir(RAW_SYNTHCITY) as tmp:
            summary = write_dataset(ctx.params.synth, tmp)
        ctx.write_metrics(dataset_metrics(summary))
        ctx.log.info("SynthCity: %d frames of %d snippets in %.1f s (%.1f frames/s, %d workers) -> %s",
                     summary["frames"], summary["snippets"], summary["seconds"], summary["frames_per_second"],
                     summary["workers"], RAW_SYNTHCITY)
