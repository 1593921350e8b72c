"""select stage: choose which target-domain train frames a person should annotate (Hoyer Alg. 1).

Pool: the annotated (offset 0) train frames of the target domain in the prepared manifest, sorted by
id so that the result does not depend on manifest row order. Their labels are never read to choose;
after the choice is final they are read only to report class coverage in metrics/select.json.

Teacher: data/models/sde_stage1.pt (any guidance: in eval mode guided networks read nothing but
the image). Output: data/selection/selection.parquet (id, rank, round,
distance, uncertainty), which finetune reads directly, and metrics/select.json.

After the last round a student is also trained on the whole chosen set (`student_steps[-1]` steps)
and its error on the rest of the pool is reported: a label-free measure of how well the chosen
frames teach the pool, comparable across `select.method` ablations.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from semdepth import SemdepthError
from semdepth.io import atomic_dir, read_table, resolve, write_table
from stages._common import stage

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.parquet"
TEACHER = Path("data/models/sde_stage1.pt")
OUT_DIR = Path("data/selection")
TABLE = "selection.parquet"


def pool_frames(manifest: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """Annotated target-domain train frames, sorted by id."""
    m = manifest
    pool = m[(m["split"] == "train") & (m["domain"] == "target") & m["annotated"].astype(bool)]
    return pool.sort_values("id").reset_index(drop=True)


def check_pool(n_labels: int, pool_size: int) -> None:
    if n_labels > pool_size:
        raise SemdepthError(f"select.n_labels: {n_labels} is larger than the pool of {pool_size} annotated "
                            f"target-domain train frames in {MANIFEST}")


def load_images(paths: list[Path]) -> "torch.Tensor":  # noqa: F821
    """All pool images as one uint8 [N, 3, H, W] tensor (the student revisits them every round)."""
    import torch

    from semdepth.data.frames import read_rgb_u8
    from semdepth.progress import track

    imgs = [read_rgb_u8(p) for p in track(paths, "select: reading frames")]
    shapes = {im.shape for im in imgs}
    if len(shapes) != 1:
        raise SemdepthError(f"{MANIFEST}: pool frames differ in size ({sorted(shapes)[:2]}); rerun downsample")
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def class_coverage(label_paths: list[Path | None]) -> dict[str, Any] | None:
    """Classes present and pixel share per class (valid pixels only) over frames that have labels."""
    from semdepth.data.frames import read_label_u8
    from semdepth.data.labels import IGNORE, NUM_CLASSES, TRAIN_NAMES

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


def main(params_path: str | Path) -> None:
    import pandas as pd
    import torch

    from semdepth.models.sde import load_sde
    from semdepth.selection.distance import min_distance_to_set, nearest_neighbour_distances
    from semdepth.selection.features import teacher_pass, zscore
    from semdepth.selection.greedy import select_frames
    from semdepth.selection.student import train_student
    from semdepth.selection.uncertainty import pool_errors

    with stage("select", params_path, ["select", "data"]) as ctx:
        cfg, hood = ctx.params.select, ctx.params.data.hood_fraction
        pool = pool_frames(read_table(MANIFEST))
        check_pool(cfg.n_labels, len(pool))
        depth_net, _, _ = load_sde(TEACHER, ctx.device)
        images = load_images([resolve(p, PREPARED) for p in pool["image"]])
        t0 = time.perf_counter()
        teacher = teacher_pass(depth_net, images, cfg.batch_size, ctx.device)
        del depth_net
        features = zscore(teacher.features)
        timings = {"teacher_s": time.perf_counter() - t0, "students_s": 0.0}
        ctx.log.info("pool of %d frames, %d-d features, method %s", len(pool), features.shape[1], cfg.method)

        def student_errors(selected: list[int], round_: int) -> np.ndarray:
            """Fresh student on the frames chosen so far -> E_j for the whole pool."""
            s0 = time.perf_counter()
            idx = torch.as_tensor(selected)
            student = train_student(images[idx], teacher.disparity[idx], cfg.student_steps[round_],
                                    num_layers=cfg.student_layers, batch_size=cfg.batch_size, lr=cfg.lr,
                                    seed=cfg.seed * 1000 + round_, hood_fraction=hood, device=ctx.device,
                                    description=f"select: student {round_ + 1}/{len(cfg.rounds)}")
            errors = pool_errors(student, images, teacher.disparity, hood, cfg.batch_size, ctx.device)
            timings["students_s"] += time.perf_counter() - s0
            return errors

        def on_round(r: int, sel) -> None:
            ctx.log.info("round %d: %d frames selected", r, len(sel.order))

        sel = select_frames(features, cfg.method, cfg.rounds, cfg.seed, cfg.uncertainty_weight,
                            student_errors, on_round)
        final_errors = student_errors(sel.order, len(cfg.rounds) - 1)

        chosen = sel.order
        table = pd.DataFrame({"id": pool["id"].iloc[chosen].tolist(), "rank": np.arange(len(chosen)),
                              "round": sel.round, "distance": sel.distance, "uncertainty": sel.uncertainty})
        nn = nearest_neighbour_distances(features[chosen])
        cover = min_distance_to_set(features, chosen)
        unselected = np.setdiff1d(np.arange(len(pool)), chosen)
        label_paths = [resolve(p, PREPARED) if isinstance(p, str) else None for p in pool["label"]]
        metrics = {
            **timings, "pool_size": len(pool), "n_labels": len(chosen), "feature_dim": int(features.shape[1]),
            "chosen_nn_distance_mean": _mean(nn.numpy()),
            "coverage_distance_mean": float(cover.mean()), "coverage_distance_max": float(cover.max()),
            "uncertainty_chosen_mean": _mean(sel.uncertainty),
            "student_error": {"pool_mean": float(final_errors.mean()),
                              "selected_mean": float(final_errors[chosen].mean()),
                              "unselected_mean": _mean(final_errors[unselected])},
            "class_coverage": {"chosen": class_coverage([label_paths[i] for i in chosen]),
                               "pool": class_coverage(label_paths)},
        }
        metrics["time_s"] = ctx.elapsed()
        # outputs last: anything above failing (e.g. an unreadable label) leaves nothing behind
        with atomic_dir(OUT_DIR) as tmp:
            write_table(table, tmp / TABLE)
        ctx.write_metrics(metrics)
        ctx.log.info("selected %d of %d frames (%s) in %.1fs; coverage distance %.3f",
                     len(chosen), len(pool), cfg.method, metrics["time_s"], metrics["coverage_distance_mean"])
