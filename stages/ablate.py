"""`semdepth ablate` and `semdepth report`: the paper's ablations as queued DVC experiments, and their table.

The ablations and their seed expansion are in semdepth/ablations.py, the statistics (mean ± std over
seeds, paired differences with 95% t-intervals, share of the oracle) in semdepth/report.py; this
module runs `dvc exp run --queue` / `dvc queue start` and reads `dvc exp show --json`.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

from semdepth import SemdepthError
from semdepth.ablations import ALL, DEFAULT, exp_run_args, experiments, parse_seeds
from semdepth.io import atomic_file, write_csv_rows
from semdepth.layout import FIGURES_DIR, PLOTS_DIR
from semdepth.report import csv_rows, save_bar_chart, split_name, summarise
from semdepth.report import to_markdown as stats_markdown

ABLATIONS = {n: ALL[n] for n in DEFAULT}  # what `semdepth ablate` queues without names
FIGURE = FIGURES_DIR / "ablations.png"
CSV = PLOTS_DIR / "ablations.csv"

# Metrics shown in the report: (column title, metrics file, dotted key)
COLUMNS = [
    ("mIoU", "metrics/eval.json", "miou"),
    ("pixel acc", "metrics/eval.json", "segmentation.pixel_accuracy"),
    ("IoU car", "metrics/eval.json", "segmentation.class_iou.car"),
    ("IoU person", "metrics/eval.json", "segmentation.class_iou.person"),
    ("IoU pole", "metrics/eval.json", "segmentation.class_iou.pole"),
    ("IoU sign", "metrics/eval.json", "segmentation.class_iou.traffic sign"),
    ("AbsRel s1", "metrics/eval.json", "depth.stage1.abs_rel"),
    ("AbsRel s2", "metrics/eval.json", "depth.stage2.abs_rel"),
    ("AbsRel edges s1", "metrics/eval.json", "depth.stage1.edge_abs_rel"),
    ("AbsRel moving s1", "metrics/eval.json", "depth.stage1.moving_abs_rel"),
    ("AbsRel car s1", "metrics/eval.json", "depth.stage1.class_abs_rel.car"),
    ("AbsRel car s2", "metrics/eval.json", "depth.stage2.class_abs_rel.car"),
    ("AbsRel moving s2", "metrics/eval.json", "depth.stage2.moving_abs_rel"),
]
METRICS = [c[0] for c in COLUMNS]


def _prepare_tracking_store() -> None:
    """Create and migrate a SQLite MLflow store before the queue workers start.

    Each stage also opens the store under a file lock, so workers cannot break a fresh store; doing it
    here once means no worker waits on that lock for a migration. Servers and file stores need nothing.
    """
    if os.environ.get("SEMDEPTH_TRACKING", "1") == "0":
        return
    from semdepth.tracking import prepare_store, sqlite_path, tracking_uri

    uri = tracking_uri()
    if sqlite_path(uri) is None:
        return
    try:
        prepare_store(uri)
    except Exception as e:  # noqa: BLE001 - the stages create it themselves if this fails
        print(f"warning: could not prepare the MLflow store {uri} ({(str(e).splitlines() or [type(e).__name__])[0]}); "
              "the first stage will create it")


def queue_ablations(names: Iterable[str] | None, run: bool, jobs: int, seeds: str | None = None) -> None:
    """Queue each ablation (once per seed with `seeds`), replacing same-name experiments; `run` starts workers."""
    runs = experiments(list(names) if names else list(DEFAULT), parse_seeds(seeds))
    for name, overrides in runs:
        # re-queueing an ablation replaces its previous experiment (names must be unique)
        subprocess.run(["dvc", "exp", "remove", name], capture_output=True)
        cmd = exp_run_args(name, overrides)
        print(" ".join(cmd))
        if subprocess.call(cmd):
            raise SemdepthError(f"queueing ablation {name} failed: {' '.join(cmd)}")
    if run:
        _prepare_tracking_store()
        subprocess.check_call(["dvc", "queue", "start", "-j", str(jobs)])
        print(f"queue started with {jobs} worker(s); follow with `dvc queue status`, then `semdepth report`")


def _dig(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# executor states of experiments that have not finished: their listed metrics are the baseline's copy
PENDING = ("queued", "running")


def _rows(node: Any, state: str | None = None) -> Iterable[tuple[dict, str | None]]:
    """(record, executor state) for every experiment/commit record in `dvc exp show --json` output
    (format varies by version). DVC 3 puts the state ("queued", "running", "success", "failed") on the
    experiment node around the record; commits and the workspace have none."""
    if isinstance(node, list):
        for item in node:
            yield from _rows(item, state)
    elif isinstance(node, dict):
        executor = node.get("executor")
        if isinstance(executor, dict) and executor.get("state"):
            state = str(executor["state"])
        if "rev" in node and "data" in node:
            yield node, state
        for key in ("experiments", "revs"):
            if key in node and node[key]:
                yield from _rows(node[key], state)


def table_from_exp_show(records: Any) -> list[dict]:
    out = []
    for rec, state in _rows(records):
        data = rec.get("data") or {}
        # a queued or running experiment lists the workspace's metrics as its own: show none
        metrics = {} if state in PENDING else data.get("metrics") or {}
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        rev = str(rec.get("rev"))
        short = rev[:7] if all(c in "0123456789abcdef" for c in rev) else rev  # sha or "workspace"
        row = {"experiment": rec.get("name") or data.get("name") or short}
        for title, path, key in COLUMNS:
            row[title] = _dig((metrics.get(path) or {}).get("data"), key)
        row["init"] = _dig(params, "finetune.init")
        row["multitask"] = _dig(params, "finetune.multitask")
        row["mix"] = _dig(params, "finetune.mix")
        row["select"] = _dig(params, "select.method")
        row["guidance"] = _dig(params, "sde.guidance")
        row["state"] = state or "–"
        out.append(row)
    return out


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no experiments found: queue some with `semdepth ablate --run`)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        # 4 decimals: ablation differences at this scale are often in the third
        cells = [f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v)) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ablation_results(rows: list[dict], metric: str) -> list[tuple[str, float | None]]:
    """(experiment, value) for the named ablation experiments, newest commit first, one per name.

    `dvc exp show` lists HEAD's experiments first; a name queued again from an older commit (with
    `-n`) is the same variant and seed, so only its newest run counts. Experiments that failed or have
    no metrics give None: the report lists them as failed instead of dropping them.
    """
    seen: set[str] = set()
    out = []
    for r in rows:
        name = r["experiment"]
        if split_name(name)[0] not in ALL or name in seen:
            continue
        seen.add(name)
        if r.get("state") in PENDING:
            continue  # an unfinished run is neither a result nor a failure: the table names it missing
        v = r.get(metric)
        out.append((name, float(v) if isinstance(v, (int, float)) else None))
    return out


def _is_segmentation(metric: str) -> bool:
    key = next(k for title, _, k in COLUMNS if title == metric)
    return key == "miou" or key.startswith("segmentation.")


def default_reference(variants: list[str]) -> str | None:
    """Hoyer's baselines: scratch for the segmentation ablations, no guidance for the depth ones."""
    return next((v for v in ("scratch", "guidance-none") if v in variants), None)


def report(out: Path | None, num: int = 1, metric: str = "mIoU", reference: str | None = None,
           figure: Path | None = FIGURE, csv: Path | None = CSV) -> None:
    """Print the per-experiment table and the seeded summary; write the bar chart and the CSV.

    `num`: how many commits back from HEAD to include (experiments hang off the commit they were
    queued from, so after a new commit they are only listed with num >= 2)."""
    if num < 1:
        raise SemdepthError(f"--num must be >= 1, got {num}")
    if metric not in METRICS:
        raise SemdepthError(f"--metric: {metric!r} is not one of {', '.join(METRICS)}")
    proc = subprocess.run(["dvc", "exp", "show", "--json", "-n", str(num)], capture_output=True, text=True)
    if proc.returncode:
        raise SemdepthError(f"dvc exp show failed: {proc.stderr.strip().splitlines()[-1:]}")
    rows = table_from_exp_show(json.loads(proc.stdout or "[]"))
    md = summary_markdown(rows, metric, reference, figure, csv) + "\n" + to_markdown(rows)
    print(md)
    if out:
        with atomic_file(out) as tmp:
            tmp.write_text(md)


def summary_markdown(rows: list[dict], metric: str, reference: str | None, figure: Path | None = None,
                     csv: Path | None = None) -> str:
    """The paper's table of the seeded ablations (and the chart and CSV when paths are given)."""
    results = ablation_results(rows, metric)
    variants = [split_name(n)[0] for n, _ in results]
    if reference is not None and reference not in variants:
        raise SemdepthError(f"--reference: no experiment of ablation {reference!r} found "
                            f"(have: {', '.join(dict.fromkeys(variants)) or 'none'})")
    reference = reference or default_reference(variants)
    # a share of the oracle means something for segmentation only: the oracle's depth is the default's
    summaries = summarise(results, reference=reference, oracle="oracle" if _is_segmentation(metric) else None)
    if figure is not None and any(s.n for s in summaries):
        save_bar_chart(figure, summaries, metric)
    if csv is not None and summaries:
        write_csv_rows(csv, csv_rows(summaries, metric))
    return stats_markdown(summaries, metric, reference)
