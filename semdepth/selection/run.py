"""Selection over the prepared pool, end to end: teacher pass, rounds of students, the chosen table.

Pool: the annotated (offset 0) target-domain train frames of the manifest, sorted by id so that the
result does not depend on manifest row order. Their labels are never read to choose; after the
choice is final they are read only to report class coverage.

After the last round a student is also trained on the whole chosen set (`student_steps[-1]` steps)
and its error on the rest of the pool is reported: a label-free measure of how well the chosen
frames teach the pool, comparable across `select.method` ablations.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from semdepth import SemdepthError
from semdepth.config import SelectConfig
from semdepth.data.frames import read_label_u8, read_rgb_u8
from semdepth.data.labels import IGNORE, NUM_CLASSES, TRAIN_NAMES
from semdepth.data.manifest import annotated_pool
from semdepth.io import read_table, resolve
from semdepth.models.sde import load_sde
from semdepth.progress import track
from semdepth.runtime import get_logger
from semdepth.selection.distance import min_distance_to_set, nearest_neighbour_distances
from semdepth.selection.features import teacher_pass, zscore
from semdepth.selection.greedy import Selection, select_frames
from semdepth.selection.student import train_student
from semdepth.selection.uncertainty import pool_errors

log = get_logger("semdepth.select")


@dataclass
class SelectionRun:
    """The chosen frames (`id, rank, round, distance, uncertainty`) and what the run measured."""

    table: pd.DataFrame
    metrics: dict[str, Any]


def check_pool(n_labels: int, pool_size: int, manifest: str | Path) -> None:
    if n_labels > pool_size:
        raise SemdepthError(f"select.n_labels: {n_labels} is larger than the pool of {pool_size} annotated "
                            f"target-domain train frames in {manifest}")


def load_images(paths: list[Path], manifest: str | Path) -> torch.Tensor:
    """All pool images as one uint8 [N, 3, H, W] tensor (the student revisits them every round)."""
    imgs = [read_rgb_u8(p) for p in track(paths, "select: reading frames")]
    shapes = {im.shape for im in imgs}
    if len(shapes) != 1:
        raise SemdepthError(f"{manifest}: pool frames differ in size ({sorted(shapes)[:2]}); rerun downsample")
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def class_coverage(label_paths: list[Path | None]) -> dict[str, Any] | None:
    """Classes present and pixel share per class (valid pixels only) over frames that have labels."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    frames = 0
    for p in label_paths:
        if p is None:
            continue
        lab = read_label_u8(p)
        counts += np.bincount(lab[lab != IGNORE].ravel(), minlength=256)[:NUM_CLASSES]
        frames += 1
    if frames == 0:
        return None
    total = max(int(counts.sum()), 1)
    present = [TRAIN_NAMES[c] for c in range(NUM_CLASSES) if counts[c] > 0]
    return {"frames": frames, "n_classes": len(present), "classes_present": present,
            "pixel_share": {TRAIN_NAMES[c]: float(counts[c] / total) for c in range(NUM_CLASSES)}}


def _mean(values: list[float] | np.ndarray) -> float | None:
    vals = [float(v) for v in values if math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def _metrics(sel: Selection, features: torch.Tensor, final_errors: np.ndarray, label_paths: list[Path | None],
             timings: dict[str, float]) -> dict[str, Any]:
    chosen = sel.order
    nn = nearest_neighbour_distances(features[chosen])
    cover = min_distance_to_set(features, chosen)
    unselected = np.setdiff1d(np.arange(len(features)), chosen)
    return {
        **timings, "pool_size": len(features), "n_labels": len(chosen), "feature_dim": int(features.shape[1]),
        "chosen_nn_distance_mean": _mean(nn.numpy()),
        "coverage_distance_mean": float(cover.mean()), "coverage_distance_max": float(cover.max()),
        "uncertainty_chosen_mean": _mean(sel.uncertainty),
        "student_error": {"pool_mean": float(final_errors.mean()),
                          "selected_mean": float(final_errors[chosen].mean()),
                          "unselected_mean": _mean(final_errors[unselected])},
        "class_coverage": {"chosen": class_coverage([label_paths[i] for i in chosen]),
                           "pool": class_coverage(label_paths)},
    }


def run_selection(manifest: Path, teacher: Path, cfg: SelectConfig, *, hood_fraction: float,
                  device: torch.device) -> SelectionRun:
    """Hoyer's Algorithm 1 on the pool of `manifest` with the SDE checkpoint `teacher` (any guidance:
    in eval mode guided networks read nothing but the image)."""
    pool = annotated_pool(read_table(manifest))
    check_pool(cfg.n_labels, len(pool), manifest)
    root = manifest.parent
    depth_net, _, _ = load_sde(teacher, device)
    images = load_images([resolve(p, root) for p in pool["image"]], manifest)
    t0 = time.perf_counter()
    teacher_out = teacher_pass(depth_net, images, cfg.batch_size, device)
    del depth_net
    features = zscore(teacher_out.features)
    timings = {"teacher_s": time.perf_counter() - t0, "students_s": 0.0}
    log.info("pool of %d frames, %d-d features, method %s", len(pool), features.shape[1], cfg.method)

    def student_errors(selected: list[int], round_: int) -> np.ndarray:
        """Fresh student on the frames chosen so far -> E_j for the whole pool."""
        s0 = time.perf_counter()
        idx = torch.as_tensor(selected)
        student = train_student(images[idx], teacher_out.disparity[idx], cfg.student_steps[round_],
                                num_layers=cfg.student_layers, batch_size=cfg.batch_size, lr=cfg.lr,
                                seed=cfg.seed * 1000 + round_, hood_fraction=hood_fraction, device=device,
                                description=f"select: student {round_ + 1}/{len(cfg.rounds)}")
        errors = pool_errors(student, images, teacher_out.disparity, hood_fraction, cfg.batch_size, device)
        timings["students_s"] += time.perf_counter() - s0
        return errors

    def on_round(r: int, sel: Selection) -> None:
        log.info("round %d: %d frames selected", r, len(sel.order))

    sel = select_frames(features, cfg.method, cfg.rounds, cfg.seed, cfg.uncertainty_weight, student_errors, on_round)
    final_errors = student_errors(sel.order, len(cfg.rounds) - 1)
    table = pd.DataFrame({"id": pool["id"].iloc[sel.order].tolist(), "rank": np.arange(len(sel.order)),
                          "round": sel.round, "distance": sel.distance, "uncertainty": sel.uncertainty})
    label_paths = [resolve(p, root) if isinstance(p, str) else None for p in pool["label"]]
    return SelectionRun(table, _metrics(sel, features, final_errors, label_paths, timings))
