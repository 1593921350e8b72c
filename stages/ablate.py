"""The paper's ablations as queued DVC experiments, and a markdown report of their metrics.

Each ablation is a set of `-S key=value` overrides on params.yaml; `dvc exp run --queue` snapshots
the workspace, so every experiment reruns only the stages whose params changed (the rest come from
DVC's run cache). `report` reads `dvc exp show --json` and prints one row per experiment.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

from semdepth import SemdepthError

# name -> params overrides. "scratch" is Hoyer's baseline: no depth anywhere; since ImageNet weights
# are not available offline, its encoder starts from the source-domain backbone (the offline stand-in).
ABLATIONS: dict[str, dict[str, Any]] = {
    "scratch": {"finetune.init": "source", "finetune.multitask": False, "finetune.mix": "none"},
    "transfer": {"finetune.init": "sde", "finetune.multitask": False, "finetune.mix": "none"},
    "depthmix": {"finetune.init": "sde", "finetune.multitask": False, "finetune.mix": "depthmix"},
    "classmix": {"finetune.init": "sde", "finetune.multitask": False, "finetune.mix": "classmix"},
    "multitask": {"finetune.init": "sde", "finetune.multitask": True, "finetune.mix": "none"},
    "full": {"finetune.init": "sde", "finetune.multitask": True, "finetune.mix": "depthmix",
             "select.method": "ds_us"},
    "full-random-selection": {"finetune.init": "sde", "finetune.multitask": True, "finetune.mix": "depthmix",
                              "select.method": "random"},
}
# Depth guidance ablations (issue 10): rerun the whole depth half of the pipeline.
GUIDANCE = {f"guidance-{g}": {"sde.guidance": g} for g in ("none", "seg_branch", "pac", "seem")}
ALL = {**ABLATIONS, **GUIDANCE}

# Metrics shown in the report: (column title, metrics file, dotted key)
COLUMNS = [
    ("mIoU", "metrics/eval.json", "miou"),
    ("pixel acc", "metrics/eval.json", "segmentation.pixel_accuracy"),
    ("AbsRel s1", "metrics/eval.json", "depth.stage1.abs_rel"),
    ("AbsRel s2", "metrics/eval.json", "depth.stage2.abs_rel"),
    ("AbsRel car s2", "metrics/eval.json", "depth.stage2.class_abs_rel.car"),
    ("AbsRel moving s2", "metrics/eval.json", "depth.stage2.moving_abs_rel"),
    ("AbsRel edges s1", "metrics/eval.json", "depth.stage1.edge_abs_rel"),
]


def _fmt(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)


def exp_run_args(name: str, overrides: dict[str, Any]) -> list[str]:
    # no --force: for `exp run` it means "reproduce every stage", defeating the run cache
    args = ["dvc", "exp", "run", "--queue", "-n", name]
    for k, v in overrides.items():
        args += ["-S", f"{k}={_fmt(v)}"]
    return args


def queue_ablations(names: Iterable[str] | None, run: bool, jobs: int) -> None:
    chosen = list(names) if names else list(ABLATIONS)
    unknown = [n for n in chosen if n not in ALL]
    if unknown:
        raise SemdepthError(f"unknown ablation(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    for name in chosen:
        # re-queueing an ablation replaces its previous experiment (names must be unique)
        subprocess.run(["dvc", "exp", "remove", name], capture_output=True)
        cmd = exp_run_args(name, ALL[name])
        print(" ".join(cmd))
        if subprocess.call(cmd):
            raise SemdepthError(f"queueing ablation {name} failed: {' '.join(cmd)}")
    if run:
        subprocess.check_call(["dvc", "queue", "start", "-j", str(jobs)])
        print(f"queue started with {jobs} worker(s); follow with `dvc queue status`, then `semdepth report`")


def _dig(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _rows(node: Any) -> Iterable[dict]:
    """Every experiment/commit record in `dvc exp show --json` output (format varies by version)."""
    if isinstance(node, list):
        for item in node:
            yield from _rows(item)
    elif isinstance(node, dict):
        if "rev" in node and "data" in node:
            yield node
        for key in ("experiments", "revs"):
            if key in node and node[key]:
                yield from _rows(node[key])


def table_from_exp_show(records: Any) -> list[dict]:
    out = []
    for rec in _rows(records):
        data = rec.get("data") or {}
        metrics = data.get("metrics") or {}
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


def report(out: Path | None, num: int = 1) -> None:
    """`num`: how many commits back from HEAD to include (experiments hang off the commit they were
    queued from, so after a new commit they are only listed with num >= 2)."""
    if num < 1:
        raise SemdepthError(f"--num must be >= 1, got {num}")
    proc = subprocess.run(["dvc", "exp", "show", "--json", "-n", str(num)], capture_output=True, text=True)
    if proc.returncode:
        raise SemdepthError(f"dvc exp show failed: {proc.stderr.strip().splitlines()[-1:]}")
    md = to_markdown(table_from_exp_show(json.loads(proc.stdout or "[]")))
    print(md)
    if out:
        Path(out).write_text(md)
