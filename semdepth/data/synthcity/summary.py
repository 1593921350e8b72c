"""What a SynthCity render reports (metrics/synthesize.json): sizes, speed and the class balance.

The class pixel shares are named with Cityscapes' label names, so they read like the real dataset's
statistics and show at a glance when a change to the world generator shifts the balance.
"""
from __future__ import annotations

from typing import Any

from cityscapesscripts.helpers.labels import id2label


def dataset_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready metrics from `writer.write_dataset`'s summary (rounded; shares of labelled pixels)."""
    counts = summary["label_counts"]
    total = max(int(counts.sum()), 1)
    shares = {id2label[i].name.replace(" ", "_"): round(int(c) / total, 6) for i, c in enumerate(counts) if c}
    return {
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
