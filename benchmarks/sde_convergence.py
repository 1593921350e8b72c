"""SDE convergence on SynthCity: val AbsRel against wall-clock training minutes (docs/method.md §3.7).

Variants, each trained from the same seed for the same wall-clock budget with the project's
`SdeTrainer` (nothing re-implemented; evaluation is `evaluate_depth_net`, as in the pretrain stage):
- `a`: no pose warm start (`sde.pose_forward_init: 0`, monodepth2's zero translation),
- `b`: pose warm start (`--forward-init`, default the params' value: the project default),
- `c`: warm start + source-domain pretrained encoder (`sde.pretrained: source`, the pseudolabel
  stage's DeepLabV3 backbone `data/models/pseudolabel.pt`) with Hoyer's two phases: `--phase1-steps`
  with the encoder frozen, then everything at `sde.phase2_lr` plus the feature distance,
- `lr3`: b at lr 3e-4;
- `s2`, `s2lr3`: b with the photometric sources two frames away (`sde.source_offsets: [-2, 2]`:
  twice the parallax, only the annotated centre frames train), at lr 1e-4 and 3e-4;
- `s4`, `s4lr3`: b with all four sources ±1, ±2 (`[-2, -1, 1, 2]`, minimum over the four), at both lrs;
- `ph`: b with the pose net on half-size inputs (`sde.pose_scale: 0.5`, a faster step);
- around the default (`s2lr3`: sources ±2, lr 3e-4): `s2lr10` lr 1e-3, `s2b4` / `s2b16` batch 4 / 16,
  `s2ph` the pose net at half size, `s2fast` the fast step (pose net at half size, `sde.fused_adam`,
  `sde.channels_last`: more steps in the same minutes);
- `sup`: the supervised ceiling: the same depth network (same initial weights) trained on SynthCity's
  exact depth (`depth_exact`) of the training frames of the ±1 triplets (360 targets, a superset of
  the default's 120) with the scale-invariant log loss (semdepth/losses/silog.py) on all four scales
  upsampled, same batch and augmentation, lr 3e-4 (the default's). What the network can reach in the
  budget when the training signal is not the limit.
Every variant sets its own lr (1e-4 unless named), sources, pose size and batch (the params' batch unless
named), whatever the params file says, so rows from projects with other sde defaults compare.
The row-median prior of the train GT (unscaled and median-scaled) is drawn as horizontal lines.
The network's AbsRel is median-scaled (its scale is unknown to self-supervision), as in pretrain.json.

Clock: `minutes` counts training wall time only (data waits included); evaluations pause it. Every
`--eval-every-s` seconds of training the val split is evaluated, at each of the `--marks` minutes, and
once before the first step. The DataLoader worker keeps prefetching during an evaluation, so the few
steps after one wait a little less for data than in an uninterrupted run (a small optimistic bias).
The clock is wall time, so the machine must be otherwise idle: on a shared one every variant is slowed
by whatever else runs while it trains (compare `steps_per_s`, and `step` at each mark).
Schedule: the params' sde group (batch, lr, smoothness, depth range, phase2_lr, feature distance)
with a constant lr by default (`--lr-step`), steps unbounded, guidance off. Resolution: that of the
prepared data (another resolution: a project prepared at other data.height/width, as `--workdir`;
`--height/--width` only check it). No resume checkpoints are written.

Takes about len(variants) x minutes plus the evaluations (default 3 x 6 min + ~1 min, 2 threads).
Rows (JSON, one per line on stdout, also the CSV): one per evaluation point (variant, minutes, step,
abs_rel, ...) and one per prior line. The AbsRel at each mark (the first point at or after it) per
variant: a table on stderr and <name>_marks.csv. Outputs: <workdir>/benchmarks/out/sde_convergence.csv
(+ _marks.csv) and <workdir>/metrics/figures/sde_convergence.png (or all in `--out DIR`).

    python benchmarks/sde_convergence.py [--minutes 6] [--variants a b c] [--eval-every-s 30]
    python benchmarks/sde_convergence.py --workdir /tmp/base --params params.yaml --variants b s2lr3 sup
    python benchmarks/sde_convergence.py --plot-only          # redraw the PNG from the CSV
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

# Script dir first on sys.path would let a sibling benchmark named like a stdlib module shadow it.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from semdepth import SemdepthError  # noqa: E402
from semdepth.config import ConfigError, Params, SdeConfig, load_params  # noqa: E402

BENCH = "sde_convergence"
NAME = "sde_convergence"
WIDE, ALL4 = [-2, 2], [-2, -1, 1, 2]
# variant -> (label, sde overrides); the pose warm start is --forward-init unless overridden
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "a": ("(a) no pose warm start", {"pose_forward_init": 0.0}),
    "b": ("(b) pose warm start", {}),
    "c": ("(c) warm start + source encoder", {"pretrained": "source"}),
    "lr3": ("(b) lr 3e-4", {"lr": 3e-4}),
    "s2": ("(b) sources ±2", {"source_offsets": WIDE}),
    "s2lr3": ("sources ±2, lr 3e-4 (the default)", {"source_offsets": WIDE, "lr": 3e-4}),
    "s4": ("(b) sources ±1 ±2", {"source_offsets": ALL4}),
    "s4lr3": ("sources ±1 ±2, lr 3e-4", {"source_offsets": ALL4, "lr": 3e-4}),
    "ph": ("(b) pose net at half size", {"pose_scale": 0.5}),
    # levers around the default (sources ±2, lr 3e-4)
    "s2lr10": ("default at lr 1e-3", {"source_offsets": WIDE, "lr": 1e-3}),
    "s2b4": ("default at batch 4", {"source_offsets": WIDE, "lr": 3e-4, "batch_size": 4}),
    "s2b16": ("default at batch 16", {"source_offsets": WIDE, "lr": 3e-4, "batch_size": 16}),
    "s2ph": ("default, pose net at half size", {"source_offsets": WIDE, "lr": 3e-4, "pose_scale": 0.5}),
    "s2fast": ("default, fast step (pose half, fused Adam, channels_last)",
               {"source_offsets": WIDE, "lr": 3e-4, "pose_scale": 0.5, "fused_adam": True, "channels_last": True}),
    "sup": ("supervised ceiling (exact depth, SI-log), lr 3e-4", {"lr": 3e-4}),
}
LABELS = {k: v[0] for k, v in VARIANTS.items()}
SUPERVISED = "sup"
GT_COLUMN = "depth_exact"
PRIORS = {"prior_unscaled": "row-median prior (unscaled)", "prior_median_scaled": "row-median prior (median-scaled)"}
MANIFEST = Path("data/prepared/manifest.parquet")
SOURCE_MODEL = Path("data/models/pseudolabel.pt")
NO_DECAY = 10_000_000  # StepLR step beyond any run: a constant learning rate
CSV_COLUMNS = ["bench", "variant", "label", "minutes", "step", "abs_rel", "a1", "rmse", "loss", "t_z", "phase",
               "steps_per_s", "eval_s", "size", "batch", "threads", "peak_rss_mb"]


def output_paths(workdir: Path, out: Path | None) -> tuple[Path, Path]:
    """(csv, png): both in `out` if given, else the project's places under `workdir`."""
    if out is not None:
        return out / f"{NAME}.csv", out / f"{NAME}.png"
    return workdir / "benchmarks/out" / f"{NAME}.csv", workdir / "metrics/figures" / f"{NAME}.png"


def marks_path(csv_path: Path) -> Path:
    return csv_path.with_name(f"{csv_path.stem}_marks.csv")


def variant_config(base: SdeConfig, variant: str, forward_init: float, phase1_steps: int, lr_step: int) -> SdeConfig:
    """The params' sde group with the variant's changes; unbounded steps (the clock stops it)."""
    if variant not in VARIANTS:
        raise SemdepthError(f"--variants: unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    common = dict(steps=NO_DECAY, lr_step=lr_step if lr_step > 0 else NO_DECAY, guidance="none",
                  checkpoint_every=NO_DECAY, pose_forward_init=forward_init, pretrained="none", phase1_steps=0,
                  source_offsets=[-1, 1], pose_scale=1.0, lr=1e-4, crop_height=0, crop_width=0,
                  fused_adam=False, channels_last=False)
    overrides = dict(VARIANTS[variant][1])
    if overrides.get("pretrained") == "source":
        overrides["phase1_steps"] = phase1_steps
    return dataclasses.replace(base, **{**common, **overrides})


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _emit(row: dict, stream) -> None:
    print(json.dumps(row), file=stream, flush=True)


class SupervisedTrainer:
    """The ceiling: SdeTrainer's depth network trained on GT depth (no pose net, no photometric loss)
    through the same loop, sampler and augmentation; the interface the benchmark uses of SdeTrainer
    (`depth_net`, `phase_of`, `train(on_step=)`)."""

    def __init__(self, cfg: SdeConfig, dataset, device, *, seed: int, num_workers: int) -> None:
        import torch

        from semdepth.models.sde import build_depth_net

        self.cfg, self.dataset, self.device, self.seed, self.num_workers = cfg, dataset, device, seed, num_workers
        self.depth_net = build_depth_net(cfg).to(device)
        self.optimizer = torch.optim.Adam(self.depth_net.parameters(), lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.lr_step, cfg.lr_decay)

    @staticmethod
    def phase_of(step: int) -> int:
        return 0

    def loss(self, batch: dict):
        import torch.nn.functional as F

        from semdepth.geometry.depth import disp_to_depth
        from semdepth.losses.silog import scale_invariant_log_loss

        cfg = self.cfg
        gt = batch["depth"]
        valid = (gt > cfg.min_depth) & (gt < cfg.max_depth)
        terms = []
        for disp in self.depth_net(batch["aug_0"])["disp"].values():
            if disp.shape[-2:] != gt.shape[-2:]:
                disp = F.interpolate(disp, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            terms.append(scale_invariant_log_loss(disp_to_depth(disp, cfg.min_depth, cfg.max_depth)[1], gt, valid))
        return sum(terms) / len(terms)

    def train(self, on_step):
        from semdepth.data.sequence import triplet_loader
        from semdepth.training import loop
        from semdepth.training.loss_log import LossLog
        from semdepth.training.sde_trainer import to_device

        def forward(i: int, batch: dict):
            loss = self.loss(to_device(batch, self.device))
            return loss, {"loss": float(loss.detach())}

        def update(i: int, loss) -> None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()

        def after_step(done: int, values: dict) -> bool:
            stop = on_step(done, values)
            self.depth_net.train()  # the evaluation switched it to eval
            return bool(stop)

        self.depth_net.train()
        loader = triplet_loader(self.dataset, self.cfg.batch_size, self.seed, 0, self.num_workers)
        result = loop.train_steps(forward, update, loader, start=0, steps=self.cfg.steps, name=f"{NAME} sup",
                                  loss_log=LossLog(10), progress=False, on_step=after_step)
        self.depth_net.eval()
        return result


class Run:
    """Shared inputs of all variants (datasets, priors, eval settings) and the rows written so far."""

    def __init__(self, args: argparse.Namespace, params: Params, stdout) -> None:
        import torch

        from semdepth.runtime import pick_device

        self.args, self.params, self.stdout = args, params, stdout
        self.workdir = args.workdir
        self.manifest = self.workdir / MANIFEST
        if not self.manifest.is_file():
            raise SemdepthError(f"{self.manifest}: not found (run `dvc repro downsample` in the workdir first)")
        self.device = pick_device(args.device)
        self._datasets: dict[tuple, Any] = {}
        triplets = self.dataset((-1, 1))
        h, w = triplets.height, triplets.width
        if (args.height and args.height != h) or (args.width and args.width != w):
            raise SemdepthError(f"{self.manifest}: prepared at {h}x{w}, not the requested "
                                f"{args.height or h}x{args.width or w} (re-prepare with that data.height/width)")
        self.size = f"{w}x{h}"
        self.rows: list[dict] = []
        self.kept: list[dict] = args.kept_rows  # --merge: other variants' rows from the existing CSV
        torch.set_num_threads(args.threads)

    def dataset(self, source_offsets: tuple[int, ...], depth: str | None = None):
        """The training tuples for these sources (cached); `depth`: target frames only, with that GT
        column, restricted to the frames the default triplets train on."""
        from semdepth.data.sequence import TripletDataset

        key = (tuple(source_offsets), depth)
        if key not in self._datasets:
            sde = self.params.sde
            ids = self.dataset((-1, 1)).ids if depth is not None else None
            self._datasets[key] = TripletDataset(self.manifest, ids, sde.flip_prob, sde.jitter_prob,
                                                 source_offsets=source_offsets, depth=depth)
        return self._datasets[key]

    # ------------------------------------------------------------------ rows
    def add(self, row: dict) -> None:
        from semdepth.io import write_csv_rows

        row = {"bench": BENCH, **row}
        self.rows.append(row)
        _emit(row, self.stdout)
        # Rewritten (atomically) after every point: an interrupted run keeps what it measured.
        write_csv_rows(self.args.csv, [{c: r.get(c) for c in CSV_COLUMNS} for r in self.kept + self.rows])

    def priors(self) -> None:
        from semdepth.metrics.depth_eval import row_median_prior_metrics

        p = self.params
        prior = row_median_prior_metrics(self.manifest, eval_cfg=p.eval, hood_fraction=p.data.hood_fraction)
        for key, name in (("prior_unscaled", "unscaled"), ("prior_median_scaled", "median_scaled")):
            m = prior[name]
            self.add({"variant": key, "label": PRIORS[key], "minutes": None, "step": None,
                      "abs_rel": round(m["abs_rel"], 5), "a1": round(m["a1"], 5), "rmse": round(m["rmse"], 4),
                      "size": self.size})

    # ------------------------------------------------------------------ one variant
    def evaluate(self, depth_net, cfg: SdeConfig, variant: str) -> dict:
        from semdepth.metrics.depth_eval import evaluate_depth_net

        p = self.params
        return evaluate_depth_net(depth_net, self.manifest, device=self.device, net_min_depth=cfg.min_depth,
                                  net_max_depth=cfg.max_depth, eval_cfg=p.eval, hood_fraction=p.data.hood_fraction,
                                  batch_size=p.eval.batch_size, description=f"{NAME} {variant}: val")

    def trainer(self, variant: str, cfg: SdeConfig):
        from semdepth.runtime import seed_everything
        from semdepth.training.sde_trainer import SdeTrainer

        args, p = self.args, self.params
        seed_everything(p.seed)  # same initial depth/pose weights in every variant (bar the pose bias)
        if variant == SUPERVISED:
            return SupervisedTrainer(cfg, self.dataset((), GT_COLUMN), self.device, seed=p.seed,
                                     num_workers=args.workers)
        pretrained = str(self.workdir / SOURCE_MODEL) if cfg.pretrained == "source" else None
        return SdeTrainer(cfg, self.dataset(tuple(cfg.source_offsets)), self.device, seed=p.seed,
                          num_workers=args.workers, pretrained=pretrained, resume_root=None,
                          description=f"{NAME} {variant}", log_every=10, progress=False)

    def variant(self, variant: str) -> None:
        from semdepth.runtime import get_logger

        args = self.args
        log = get_logger("semdepth.bench")
        cfg = variant_config(self.params.sde, variant, args.forward_init, args.phase1_steps, args.lr_step)
        trainer = self.trainer(variant, cfg)
        budget = args.minutes * 60.0
        marks = [60.0 * m for m in args.marks if 60.0 * m < budget]
        clock = {"eval_s": 0.0, "last": 0.0, "t0": 0.0}

        def point(step: int, train_s: float, losses: dict | None) -> None:
            te = time.perf_counter()
            m = self.evaluate(trainer.depth_net, cfg, variant)
            eval_s = time.perf_counter() - te
            t_z = (losses or {}).get("t_z")
            self.add({"variant": variant, "label": LABELS[variant], "minutes": round(train_s / 60, 4), "step": step,
                      "abs_rel": round(m["abs_rel"], 5), "a1": round(m["a1"], 5), "rmse": round(m["rmse"], 4),
                      "loss": round(losses["loss"], 5) if losses else None,
                      "t_z": round(t_z, 5) if t_z is not None else None, "phase": trainer.phase_of(max(step - 1, 0)),
                      "steps_per_s": round(step / train_s, 3) if train_s > 0 else None, "eval_s": round(eval_s, 2),
                      "size": self.size, "batch": cfg.batch_size, "threads": args.threads,
                      "peak_rss_mb": _peak_rss_mb()})
            clock["eval_s"] += time.perf_counter() - te  # evaluation and row writing pause the clock

        def on_step(done: int, losses: dict) -> bool:
            train_s = time.perf_counter() - clock["t0"] - clock["eval_s"]
            last = train_s >= budget
            at_mark = bool(marks) and train_s >= marks[0]
            while marks and train_s >= marks[0]:
                marks.pop(0)
            if last or at_mark or train_s - clock["last"] >= args.eval_every_s:
                clock["last"] = train_s
                point(done, train_s, losses)
            return last

        log.info("%s %s: %s for %.2f min at %s, batch %d, %d threads", NAME, variant, LABELS[variant],
                 args.minutes, self.size, cfg.batch_size, args.threads)
        point(0, 0.0, None)
        clock["eval_s"] = 0.0
        clock["t0"] = time.perf_counter()
        trainer.train(on_step=on_step)


# ---------------------------------------------------------------------- the marks table
def mark_rows(csv_path: Path, marks: list[float]) -> list[dict]:
    """Per variant and mark: the first evaluation point at or after that many minutes (None: the
    variant's budget ended before it)."""
    import pandas as pd

    df = pd.read_csv(csv_path)
    curves = df[~df["variant"].isin(list(PRIORS))]
    rows = []
    for v, g in curves.groupby("variant", sort=False):
        row: dict[str, Any] = {"variant": v, "label": g["label"].iloc[0]}
        for m in marks:
            hit = g[g["minutes"] >= m - 1e-9].sort_values("minutes")
            row[f"abs_rel_{m:g}min"] = float(hit["abs_rel"].iloc[0]) if not hit.empty else None
            row[f"step_{m:g}min"] = int(hit["step"].iloc[0]) if not hit.empty else None
        rows.append(row)
    return rows


def marks_table(rows: list[dict], marks: list[float]) -> str:
    """Markdown: AbsRel (step) at each mark per variant."""
    head = "| variant | " + " | ".join(f"{m:g} min" for m in marks) + " |"
    lines = [head, "|---" * (len(marks) + 1) + "|"]
    for r in rows:
        cells = [f"{r[f'abs_rel_{m:g}min']:.4f} ({r[f'step_{m:g}min']})" if r[f"abs_rel_{m:g}min"] is not None
                 else "" for m in marks]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- plotting
def plot(csv_path: Path, png_path: Path) -> None:
    """AbsRel-vs-minutes lines per variant and the priors as horizontal lines, from the CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from semdepth.io import atomic_file

    if not csv_path.is_file():
        raise SemdepthError(f"{csv_path}: no benchmark CSV to plot (run without --plot-only first)")
    df = pd.read_csv(csv_path)
    missing = {"variant", "minutes", "abs_rel"} - set(df.columns)
    if missing:
        raise SemdepthError(f"{csv_path}: not a {BENCH} CSV (missing columns {', '.join(sorted(missing))})")
    curves = df[~df["variant"].isin(list(PRIORS))]
    if curves.empty:
        raise SemdepthError(f"{csv_path}: has no evaluation points")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    present = sorted(set(curves["variant"].astype(str)))  # one distinct colour per curve drawn
    palette = plt.get_cmap("tab10" if len(present) <= 10 else "tab20").colors
    colors = {v: palette[i % len(palette)] for i, v in enumerate(present)}
    for v, g in curves.groupby("variant", sort=True):
        g = g.sort_values("minutes")
        label = g["label"].iloc[0] if "label" in g and isinstance(g["label"].iloc[0], str) else str(v)
        ax.plot(g["minutes"], g["abs_rel"], marker="o", ms=3, lw=1.5, color=colors.get(str(v)), label=label,
                ls="--" if v == SUPERVISED else "-")
    for key, style in (("prior_unscaled", "--"), ("prior_median_scaled", ":")):
        row = df[df["variant"] == key]
        if not row.empty:
            ax.axhline(float(row["abs_rel"].iloc[0]), color="0.35", ls=style, lw=1.2,
                       label=f"{PRIORS[key]}: {float(row['abs_rel'].iloc[0]):.3f}")
    info = []
    for col in ("size", "batch", "threads"):
        if col in curves and curves[col].notna().any():
            vals = [int(v) if isinstance(v, float) else v for v in dict.fromkeys(curves[col].dropna())]
            info.append(f"{col} {' / '.join(map(str, vals))}")
    ax.set_xlabel("training wall-clock minutes (evaluation excluded)")
    ax.set_ylabel("val AbsRel (network median-scaled)")
    ax.set_title("SDE convergence on SynthCity" + (f" ({', '.join(info)})" if info else ""), fontsize=10)
    top = float(curves["abs_rel"].quantile(0.95))
    priors = df[df["variant"].isin(list(PRIORS))]["abs_rel"]
    ax.set_ylim(0, max(top, float(priors.max()) if not priors.empty else 0) * 1.1 or 1.0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(png_path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_marks(csv_path: Path, marks: list[float]) -> str:
    """The marks CSV next to the benchmark CSV; returns the markdown table."""
    from semdepth.io import write_csv_rows

    rows = mark_rows(csv_path, marks)
    write_csv_rows(marks_path(csv_path), rows)
    return marks_table(rows, marks)


# ---------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog="\n\n".join(doc.split("\n\n")[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("."),
                    help="project dir holding data/prepared/ (and data/models/pseudolabel.pt for c); default .")
    ap.add_argument("--params", type=Path, default=None, help="params file (default <workdir>/params.yaml)")
    ap.add_argument("--variants", nargs="+", default=["a", "b", "c"], choices=list(VARIANTS))
    ap.add_argument("--minutes", type=float, default=6.0, help="training wall-clock budget per variant (default 6)")
    ap.add_argument("--marks", type=float, nargs="+", default=[1.0, 2.0, 4.0, 6.0],
                    help="minutes at which every variant is evaluated and tabulated (default 1 2 4 6)")
    ap.add_argument("--eval-every-s", type=float, default=30.0, help="seconds of training between evaluations (default 30)")
    ap.add_argument("--phase1-steps", type=int, default=100, help="variant c: steps with the encoder frozen")
    ap.add_argument("--forward-init", type=float, default=None,
                    help="all variants but a: pose warm start (default sde.pose_forward_init, else 0.03)")
    ap.add_argument("--lr-step", type=int, default=0, help="StepLR step (0 = constant lr, the default)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default compute.num_workers)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--height", type=int, default=None, help="check: the prepared data's height")
    ap.add_argument("--width", type=int, default=None, help="check: the prepared data's width")
    ap.add_argument("--out", type=Path, default=None, help="write the CSVs and PNG here instead")
    ap.add_argument("--merge", action="store_true",
                    help="keep the existing CSV's rows of variants not run now (re-run one variant)")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the PNG (and the marks) from the CSV")
    args = ap.parse_args(argv)
    for name in ("minutes", "eval_every_s"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')}: must be positive")
    if args.phase1_steps < 0 or args.threads < 1 or args.lr_step < 0 or min(args.marks) <= 0:
        ap.error("--phase1-steps and --lr-step must be >= 0, --threads >= 1, --marks positive")
    args.variants = list(dict.fromkeys(args.variants))
    args.marks = sorted(set(args.marks))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.csv, args.png = output_paths(args.workdir, args.out)
    try:
        if args.plot_only:
            plot(args.csv, args.png)
            print(write_marks(args.csv, args.marks), file=sys.stderr)
            print(f"{NAME}: wrote {args.png}", file=sys.stderr)
            return 0
        params = load_params(args.params or args.workdir / "params.yaml")
        if args.forward_init is None:
            args.forward_init = params.sde.pose_forward_init or SdeConfig().pose_forward_init
        if args.workers is None:
            args.workers = params.compute.num_workers
        if "c" in args.variants and not (args.workdir / SOURCE_MODEL).is_file():
            raise SemdepthError(f"{args.workdir / SOURCE_MODEL}: not found (variant c needs the pseudolabel "
                                f"stage's model: run `dvc repro pseudolabel`)")
        args.kept_rows = []
        if args.merge and args.csv.is_file():
            import pandas as pd

            old = pd.read_csv(args.csv)
            old = old[~old["variant"].isin(args.variants + list(PRIORS))]
            args.kept_rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                              for r in old.to_dict("records")]
        stdout = sys.stdout
        # Rich progress bars and logs go to stderr: stdout carries only the JSON rows.
        with contextlib.redirect_stdout(sys.stderr):
            run = Run(args, params, stdout)
            run.priors()
            for v in args.variants:
                run.variant(v)
            plot(args.csv, args.png)
            table = write_marks(args.csv, args.marks)
        print(table, file=sys.stderr)
        print(f"{NAME}: wrote {args.csv}, {marks_path(args.csv).name} and {args.png}", file=sys.stderr)
        return 0
    except (SemdepthError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
