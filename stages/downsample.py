"""downsample stage: a Cityscapes-layout root -> data/prepared/ at the working resolution + manifest.

Snippets are independent, so they are prepared in worker processes (`data.workers`, 0 = all cores),
each writing straight into the temporary output directory; the manifest is assembled here, sorted,
so the output does not depend on which worker finished first. The whole of data/prepared/ appears
only when every snippet succeeded (semdepth.io.atomic_dir).
"""
from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from semdepth import SemdepthError
from semdepth.data.cityscapes import CityscapesRoot, PrepareTask, prepare_snippet, write_manifest
from semdepth.io import atomic_dir
from semdepth.progress import track
from semdepth.runtime import cpu_workers
from stages._common import stage

PREPARED = Path("data/prepared")
MANIFEST = "manifest.parquet"


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would oversubscribe


def _run_tasks(tasks: list[PrepareTask], workers: int) -> Iterator[list[dict[str, Any]]]:
    """Rows per snippet, in completion order; errors from a worker propagate (and stop the pool)."""
    if workers <= 1:
        import cv2

        old = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            yield from map(prepare_snippet, tasks)
        finally:
            cv2.setNumThreads(old)
        return
    with mp.get_context().Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(prepare_snippet, tasks, chunksize=1)


def prepare(raw_dir: str | Path, out_dir: str | Path, height: int, width: int, offsets: list[int],
            splits: list[str], workers: int, log=None) -> dict[str, Any]:
    """Prepare `raw_dir` into `out_dir` (atomically) and return the metrics dict."""
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
    rows: list[dict[str, Any]] = []
    with atomic_dir(out_dir) as tmp:
        tasks = [PrepareTask(str(raw_dir), str(tmp), s, height, width) for s in plan.snippets]
        results: Iterable = _run_tasks(tasks, n_workers)
        for snippet_rows in track(results, f"downsample ({n_workers} worker{'s' if n_workers > 1 else ''})",
                                  total=len(tasks)):
            rows.extend(snippet_rows)
        order = {s: i for i, s in enumerate(splits)}
        rows.sort(key=lambda r: (order[r["split"]], r["id"]))
        write_manifest(rows, Path(tmp) / MANIFEST)
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


def main(params_path: str | Path = "params.yaml") -> None:
    with stage("downsample", params_path, ["data"]) as ctx:
        cfg = ctx.params.data
        metrics = prepare(cfg.raw_dir, PREPARED, cfg.height, cfg.width, cfg.frame_offsets, cfg.splits,
                          cpu_workers(cfg.workers), log=ctx.log)
        ctx.write_metrics(metrics)
        ctx.log.info("prepared %d frames (%s), %d snippet(s) skipped, %.1f frames/s",
                     metrics["frames_total"], ", ".join(f"{k} {v}" for k, v in metrics["frames"].items()),
                     metrics["snippets_skipped"], metrics["frames_per_s"])
