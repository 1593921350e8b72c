"""Preparing a Cityscapes-layout root at the working resolution: every snippet, then the manifest.

Snippets are independent, so they are prepared in worker processes, each writing straight into the
temporary output directory; the manifest is assembled here, sorted, so the output does not depend
on which worker finished first. The whole output directory appears only when every snippet
succeeded (semdepth.io.atomic_dir). semdepth/data/cityscapes.py prepares one snippet.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2

from semdepth import SemdepthError
from semdepth.data.cityscapes import CityscapesRoot, PrepareTask, prepare_snippet, write_manifest
from semdepth.io import atomic_dir, write_fingerprint
from semdepth.progress import track

MANIFEST_NAME = "manifest.parquet"  # inside the prepared root (docs/contracts.md, "Prepared manifest")


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would oversubscribe


def _prepare_all(tasks: list[PrepareTask], workers: int) -> list[dict[str, Any]]:
    """Manifest rows of every snippet; the first worker error propagates.

    A process pool rather than multiprocessing.Pool: a worker that dies (OOM killer) makes
    concurrent.futures raise BrokenProcessPool, where Pool waits forever for the lost task, and on an
    error we cancel what has not started and *wait* for the running snippets, so that no worker is
    still writing into the temporary directory while atomic_dir removes it.
    """
    desc = f"downsample ({workers} worker{'s' if workers > 1 else ''})"
    rows: list[dict[str, Any]] = []
    if workers <= 1:
        old = cv2.getNumThreads()
        cv2.setNumThreads(1)  # same per-process work as a pool worker: frames/s comparable
        try:
            for task in track(tasks, desc):
                rows.extend(prepare_snippet(task))
        finally:
            cv2.setNumThreads(old)
        return rows
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context(), initializer=_init_worker)
    try:
        futures = [pool.submit(prepare_snippet, t) for t in tasks]
        for fut in track(as_completed(futures), desc, total=len(futures)):
            rows.extend(fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return rows


def prepare(raw_dir: str | Path, out_dir: str | Path, height: int, width: int, offsets: list[int],
            splits: list[str], workers: int, log: logging.Logger | None = None,
            manifest_name: str = MANIFEST_NAME) -> dict[str, Any]:
    """Prepare `raw_dir` into `out_dir` (atomically, its manifest as `manifest_name`) and return the
    metrics dict. `workers`: processes (1 = in this process)."""
    t0 = time.perf_counter()
    root = CityscapesRoot(raw_dir)
    plan = root.plan(splits, offsets)
    if log:
        for split, ids in plan.skipped.items():
            if ids:
                log.warning("%s: skipped %d snippet(s) lacking a neighbour frame (e.g. %s)", split, len(ids), ids[0])
    if not plan.snippets:
        raise SemdepthError(f"data.raw_dir: {raw_dir} has no complete snippet for splits {splits} "
                            f"and offsets {offsets} ({plan.n_skipped} skipped)")
    n_workers = max(1, min(workers, len(plan.snippets)))
    with atomic_dir(out_dir) as tmp:
        tasks = [PrepareTask(str(raw_dir), str(tmp), s, height, width) for s in plan.snippets]
        rows = _prepare_all(tasks, n_workers)
        order = {s: i for i, s in enumerate(splits)}
        rows.sort(key=lambda r: (order[r["split"]], r["id"]))
        write_manifest(rows, Path(tmp) / manifest_name)
        write_fingerprint(tmp)
    seconds = time.perf_counter() - t0
    frames = {s: sum(r["split"] == s for r in rows) for s in splits}
    return {
        "frames": frames,
        "frames_total": len(rows),
        "snippets": {s: sum(sn.split == s for sn in plan.snippets) for s in splits},
        "snippets_skipped": plan.n_skipped,
        "snippets_skipped_by_split": {s: len(v) for s, v in plan.skipped.items()},
        "labelled_frames": sum(r["label"] is not None for r in rows),
        "frames_per_s": len(rows) / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "workers": n_workers,
    }
