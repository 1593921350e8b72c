"""Write SynthCity to disk in the Cityscapes layout (docs/contracts.md, "Raw SynthCity").

Snippets are independent, so worker processes render and write them directly into the output
tree; only a small summary row travels back. Each snippet is seeded by (seed, split, index), PNGs
are encoded by cv2 (deterministic) and JSON is written with sorted keys, so the same parameters give
byte-identical files whatever the number of workers or the order in which snippets finish.
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels

from semdepth import SemdepthError
from semdepth.data.synthcity.camera import BASELINE, Intrinsics
from semdepth.data.synthcity.render import ANNOTATED_FRAME, disparity_png, render_snippet
from semdepth.runtime import cpu_workers

SPLITS = ("train", "val", "source")
NUM_IDS = 34  # Cityscapes label ids 0..33
SNIPPET_COLUMNS = ["split", "city", "sequence", "lead_car", "speed", "camera_height", "curvature", "frames",
                   "first_frame", "last_frame"]
# Relative speeds (m/s, ';'-separated, nearest lead car first; empty without a lead car). Written only
# when lead cars are not exactly at the ego speed or may be several, so that with the defaults
# snippets.csv stays byte-identical to earlier versions (and DVC keeps every later stage cached).
LEAD_SPEEDS_COLUMN = "lead_rel_speeds"

_COLOR_LUT = np.zeros((256, 3), np.uint8)  # label id -> RGB colour (cityscapesscripts)
for _lab in labels:
    if 0 <= _lab.id < 256:
        _COLOR_LUT[_lab.id] = _lab.color


def snippet_counts(cfg) -> dict[str, int]:
    return {"train": cfg.train_snippets, "val": cfg.val_snippets, "source": cfg.source_snippets}


def snippet_columns(cfg) -> list[str]:
    """Columns of snippets.csv: the lead cars' relative speeds only where they can be non-zero."""
    near_ego = cfg.lead_car_rel_speed > 0 or cfg.lead_cars_max > 1
    return SNIPPET_COLUMNS + [LEAD_SPEEDS_COLUMN] if near_ego else list(SNIPPET_COLUMNS)


def resolve_workers(requested: int, jobs: int) -> int:
    """`requested` 0 = all cores; never more processes than snippets."""
    return max(1, min(cpu_workers(requested), jobs))


def _encode(img: np.ndarray, what: str) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise SemdepthError(f"{what}: PNG encoding failed")
    return buf.tobytes()


def _png(path: Path, img: np.ndarray | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(img if isinstance(img, bytes) else _encode(img, str(path)))


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def camera_json(intr: Intrinsics, height: float) -> dict:
    """Cityscapes camera file for the raw resolution (intrinsics in pixels of the written images)."""
    return {"extrinsic": {"baseline": BASELINE, "pitch": 0.0, "roll": 0.0, "x": 1.7, "y": 0.0, "yaw": 0.0,
                          "z": round(float(height), 6)},
            "intrinsic": {"fx": intr.fx, "fy": intr.fy, "u0": intr.cx, "v0": intr.cy}}


def instance_ids(label: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """Cityscapes `_instanceIds`: id*1000 + instance number for classes with instances, else the id."""
    out = label.astype(np.uint16)
    has = np.array([id2label[i].hasInstances if i in id2label else False for i in range(256)])
    m = has[label] & (obj >= 0)
    if m.any():
        _, inst = np.unique(obj[m], return_inverse=True)
        out[m] = label[m].astype(np.uint16) * 1000 + inst.reshape(-1).astype(np.uint16)
    return out


def write_snippet(cfg, root: Path, split: str, index: int) -> dict:
    """Render one snippet and write its files; returns its snippets.csv row plus label pixel counts."""
    started, cpu = time.perf_counter(), time.process_time()
    scene, frames = render_snippet(cfg, split, index)
    intr = Intrinsics.cityscapes(cfg.height, cfg.width)
    city, seq = scene.city, scene.sequence
    counts = np.zeros(NUM_IDS, np.int64)

    def path(kind: str, fid: str, suffix: str) -> Path:
        return root / kind / split / city / f"{fid}{suffix}"

    for fr in frames:
        fid = f"{city}_{seq:06d}_{ANNOTATED_FRAME + fr.offset:06d}"
        bgr = _encode(np.ascontiguousarray(fr.image[..., ::-1]), fid)  # written twice for frame 19
        if split != "source":  # Cityscapes' sequence folder holds every frame, the annotated one too
            _png(path("leftImg8bit_sequence", fid, "_leftImg8bit.png"), bgr)
        p = path("depth", fid, "_depth.npy")
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, fr.depth)
        _json(path("pose", fid, "_pose.json"), {"T_world_cam": fr.pose.tolist()})
        _png(path("moving", fid, "_moving.png"), fr.moving.astype(np.uint8) * 255)
        if fr.offset == 0:
            _png(path("leftImg8bit", fid, "_leftImg8bit.png"), bgr)
            _png(path("gtFine", fid, "_gtFine_labelIds.png"), fr.label)
            _png(path("gtFine", fid, "_gtFine_color.png"), np.ascontiguousarray(_COLOR_LUT[fr.label][..., ::-1]))
            _png(path("gtFine", fid, "_gtFine_instanceIds.png"), instance_ids(fr.label, fr.instance))
            _json(path("camera", fid, "_camera.json"), camera_json(intr, scene.traj.height))
            _png(path("disparity", fid, "_disparity.png"), disparity_png(fr.depth, BASELINE, intr.fx))
            counts += np.bincount(fr.label.reshape(-1), minlength=NUM_IDS)[:NUM_IDS]
    offsets = [fr.offset for fr in frames]
    rel_speeds = ";".join(f"{v:.4f}" for v in scene.meta["lead_rel_speeds"])
    return {"split": split, "city": city, "sequence": seq, "lead_car": int(scene.lead_car),
            LEAD_SPEEDS_COLUMN: rel_speeds,
            "speed": round(scene.traj.speed, 4), "camera_height": round(scene.traj.height, 4),
            "curvature": round(scene.road.curvature, 6), "frames": len(frames),
            "first_frame": ANNOTATED_FRAME + min(offsets), "last_frame": ANNOTATED_FRAME + max(offsets),
            "_index": index, "_counts": counts, "_seconds": time.perf_counter() - started,
            "_cpu_seconds": time.process_time() - cpu}


def _job(args: tuple) -> dict:
    cfg, root, split, index = args
    return write_snippet(cfg, Path(root), split, index)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _context() -> mp.context.BaseContext:
    """forkserver: workers that did not inherit the torch/MLflow threads of the stage process, forked
    from a server that has imported the renderer once (so starting a worker costs no imports)."""
    if not sys.platform.startswith("linux"):
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def write_dataset(cfg, root: str | Path, workers: int | None = None, progress: bool = True) -> dict:
    """Render every split of `cfg` (SynthConfig) into `root` (which should be empty).

    Returns a summary: frames, wall seconds, CPU seconds spent in rendering/writing (all workers;
    unlike wall time it does not depend on what else runs on the machine), per-split counts,
    lead-car share, label pixel counts.
    """
    from semdepth.progress import track

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(cfg, str(root), split, i) for split in SPLITS for i in range(snippet_counts(cfg)[split])]
    n_workers = resolve_workers(cfg.workers if workers is None else workers, len(jobs))
    started = time.perf_counter()
    rows: list[dict] = []
    if n_workers == 1:
        results = map(_job, jobs)
        rows = list(track(results, "synthesize", total=len(jobs)) if progress else results)
    else:
        with _context().Pool(n_workers, initializer=_init_worker) as pool:
            results = pool.imap_unordered(_job, jobs, chunksize=1)
            rows = list(track(results, "synthesize", total=len(jobs)) if progress else results)
    seconds = time.perf_counter() - started
    order = {s: k for k, s in enumerate(SPLITS)}
    rows.sort(key=lambda r: (order[r["split"]], r["_index"]))
    with (root / "snippets.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=snippet_columns(cfg), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    counts = sum((r["_counts"] for r in rows), np.zeros(NUM_IDS, np.int64))
    target = [r for r in rows if r["split"] != "source"]
    frames = sum(r["frames"] for r in rows)
    cpu = sum(r["_cpu_seconds"] for r in rows)
    return {"frames": frames, "snippets": len(rows), "seconds": seconds, "workers": n_workers,
            "frames_per_second": frames / max(seconds, 1e-9), "cpu_seconds": cpu,
            "frames_per_cpu_second": frames / max(cpu, 1e-9),
            "per_split": {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS},
            "lead_car_share": (sum(r["lead_car"] for r in target) / len(target)) if target else 0.0,
            "label_counts": counts}
