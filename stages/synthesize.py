"""synthesize stage: render SynthCity (the built-in Cityscapes-layout dataset) into data/raw/synthcity/.

Reads params `synth` (and `seed`/`compute` through the stage context). The whole output directory
appears only when every snippet was written (semdepth.io.atomic_dir), so a killed run leaves
nothing DVC could mistake for a finished stage.
"""
from __future__ import annotations

from pathlib import Path

from cityscapesscripts.helpers.labels import id2label

from semdepth.data.synthcity.writer import write_dataset
from semdepth.io import atomic_dir
from stages._common import stage

RAW = Path("data/raw/synthcity")


def main(params_path: str | Path = "params.yaml") -> None:
    with stage("synthesize", params_path, ["synth"]) as ctx:
        cfg = ctx.params.synth
        with atomic_dir(RAW) as tmp:
            summary = write_dataset(cfg, tmp)
        counts = summary["label_counts"]
        total = max(int(counts.sum()), 1)
        shares = {id2label[i].name.replace(" ", "_"): round(int(c) / total, 6) for i, c in enumerate(counts) if c}
        metrics = {
            "frames": summary["frames"],
            "snippets": summary["snippets"],
            "snippets_per_split": summary["per_split"],
            "seconds": round(summary["seconds"], 3),
            "frames_per_second": round(summary["frames_per_second"], 3),
            "cpu_seconds": round(summary["cpu_seconds"], 3),
            "frames_per_cpu_second": round(summary["frames_per_cpu_second"], 3),
            "workers": summary["workers"],
            "lead_car_share": round(summary["lead_car_share"], 4),
            "class_pixel_share": shares,
        }
        ctx.write_metrics(metrics)
        ctx.log.info("SynthCity: %d frames of %d snippets in %.1f s (%.1f frames/s, %d workers) -> %s",
                     summary["frames"], summary["snippets"], summary["seconds"], summary["frames_per_second"],
                     summary["workers"], RAW)
