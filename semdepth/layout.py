"""The map of the pipeline: every data file the stages pass between them, and what each stage reads.

This module is the one place that names the pipeline's files and each stage's params. The stages
import their paths from here; `dvc.yaml` repeats them (DVC cannot import Python), and
tests/test_layout.py checks that `dvc.yaml` and this map agree: the same `params:` per stage, and every
path below among the stage's declared deps or outs. `cli.py` builds each stage's `--help` from it.

`StageSpec.params` are the params keys that change a stage's results: DVC reruns the stage when one
of them changes. `StageSpec.speed_only` are keys a stage may also read that change only how fast it
runs or what it logs (batch sizes of inference, worker counts); they are not dependencies. A stage
sees its params through a view that refuses any other key (`semdepth.config.scoped`), so a stage
cannot depend on a param that DVC does not know about. `compute.*` and `tracking.*` are readable
by every stage and never dependencies.

All paths are relative to the repository root, where DVC runs the stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA = Path("data")
RAW_SYNTHCITY = DATA / "raw" / "synthcity"

PREPARED = DATA / "prepared"
MANIFEST = PREPARED / "manifest.parquet"

PSEUDOLABELS_DIR = DATA / "pseudolabels"
PSEUDOLABELS = PSEUDOLABELS_DIR / "pseudolabels.parquet"

MODELS = DATA / "models"
PSEUDOLABEL_MODEL = MODELS / "pseudolabel.pt"
SDE_STAGE1 = MODELS / "sde_stage1.pt"
SDE_STAGE2 = MODELS / "sde_stage2.pt"
SEGMENTER = MODELS / "segmenter.pt"

SELECTION_DIR = DATA / "selection"
SELECTION = SELECTION_DIR / "selection.parquet"

FILTER_DIR = DATA / "filter"
FILTER_FRAMES = FILTER_DIR / "frames.parquet"

# resumable checkpoints of a killed training stage (not a DVC output; removed when the stage completes)
RESUME_ROOT = DATA / ".resume"

# a producer's MD5 over its output directory; consumers depend on it instead of the directory
FINGERPRINT = "fingerprint.json"

METRICS_DIR = Path("metrics")
PLOTS_DIR = METRICS_DIR / "plots"
FIGURES_DIR = METRICS_DIR / "figures"


def metrics_file(stage: str) -> Path:
    """metrics/<stage>.json: what `dvc metrics show/diff` reads."""
    return METRICS_DIR / f"{stage}.json"


def loss_csv(stage: str) -> Path:
    """The loss curve of a training stage, a DVC plot."""
    return PLOTS_DIR / f"{stage}_loss.csv"


def figures_dir(stage: str) -> Path:
    return FIGURES_DIR / stage


def fingerprint(directory: Path) -> Path:
    return directory / FINGERPRINT


@dataclass(frozen=True)
class StageSpec:
    """What one stage of dvc.yaml is: its summary, result-defining params, and files in and out."""

    name: str
    summary: str
    params: tuple[str, ...]
    reads: tuple[Path, ...] = ()
    writes: tuple[Path, ...] = ()
    speed_only: tuple[str, ...] = ()
    metrics_name: str = ""  # metrics/<metrics_name or name>.json
    seed_key: str | None = None  # the param that seeds the global RNGs (None: a constant 0)

    @property
    def metrics(self) -> Path:
        return metrics_file(self.metrics_name or self.name)

    def help(self) -> str:
        """The stage's `--help` text, from this map (so it cannot drift from what the stage reads)."""
        reads = ", ".join(self.params) + (f"; {', '.join(map(str, self.reads))}" if self.reads else "")
        writes = ", ".join(str(w) for w in self.writes)
        return f"{self.summary}\n\nReads: {reads}.\n\nWrites: {writes}."


_SDE_READS = (MANIFEST, PSEUDOLABELS, PSEUDOLABEL_MODEL)
_SDE_PARAMS = ("sde", "data.hood_fraction", "eval.min_depth", "eval.max_depth", "eval.edge_band",
               "eval.protocol")

STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("synthesize", "Render SynthCity in the Cityscapes layout, with exact depth, poses and moving masks.",
              ("synth.seed", "synth.height", "synth.width", "synth.train_snippets", "synth.val_snippets",
               "synth.source_snippets", "synth.frame_offsets", "synth.val_frame_offsets", "synth.lead_car_share",
               "synth.lead_car_rel_speed", "synth.lead_cars_max", "synth.speed_min", "synth.speed_max", "synth.fps"),
              writes=(RAW_SYNTHCITY, metrics_file("synthesize")), speed_only=("synth.workers",)),
    StageSpec("downsample", "Prepare a Cityscapes-layout root (data.raw_dir) at the working resolution.",
              ("data.raw_dir", "data.height", "data.width", "data.frame_offsets", "data.splits"),
              writes=(PREPARED, metrics_file("downsample")), speed_only=("data.workers",)),
    StageSpec("pseudolabel", "DeepLabV3 pseudo-labels (train ids, confidence, foreground) for every prepared frame.",
              ("seed", "pseudolabel", "data.raw_dir"), reads=(MANIFEST,), seed_key="seed",
              writes=(PSEUDOLABELS_DIR, PSEUDOLABEL_MODEL, metrics_file("pseudolabel"), loss_csv("pseudolabel"))),
    StageSpec("pretrain", "Stage-1 self-supervised depth and pose on all training triplets.",
              _SDE_PARAMS, reads=_SDE_READS,
              writes=(SDE_STAGE1, metrics_file("pretrain"), loss_csv("pretrain")), speed_only=("eval.batch_size",),
              seed_key="sde.seed"),
    StageSpec("select", "Choose the frames to annotate (Hoyer et al.'s student-teacher selection).",
              ("select", "data.hood_fraction"), reads=(MANIFEST, SDE_STAGE1),
              writes=(SELECTION_DIR, metrics_file("select"))),
    StageSpec("filter", "RANSAC ground plane on stage-1 depth; drop frames with points below the ground.",
              ("seed", "filter", "data.hood_fraction"), reads=(MANIFEST, PSEUDOLABELS, SDE_STAGE1), seed_key="seed",
              writes=(FILTER_DIR, metrics_file("filter"), figures_dir("filter") / "dropped.png",
                      figures_dir("filter") / "sweep.png", PLOTS_DIR / "filter_sweep.csv")),
    StageSpec("retrain", "Stage-2 depth from scratch on the frames the filter kept.",
              _SDE_PARAMS, reads=(*_SDE_READS, SDE_STAGE1, FILTER_FRAMES),
              writes=(SDE_STAGE2, metrics_file("retrain"), loss_csv("retrain")), speed_only=("eval.batch_size",),
              seed_key="sde.seed"),
    StageSpec("finetune", "Semi-supervised segmentation: SDE transfer, multi-task, DepthMix, mean teacher.",
              ("finetune", "select.n_labels", "sde.encoder_layers", "sde.min_depth", "sde.max_depth",
               "sde.smoothness"), reads=(MANIFEST, SELECTION, SDE_STAGE2, PSEUDOLABEL_MODEL),
              writes=(SEGMENTER, metrics_file("finetune"), loss_csv("finetune")), seed_key="finetune.seed"),
    StageSpec("evaluate", "Segmentation and depth evaluation on val (both SDE stages, the segmenter), figures.",
              ("eval", "data.hood_fraction", "sde.min_depth", "sde.max_depth"),
              reads=(MANIFEST, PSEUDOLABELS, SDE_STAGE1, SDE_STAGE2, SEGMENTER),
              writes=(metrics_file("eval"), figures_dir("eval"), PLOTS_DIR), metrics_name="eval"),
)}
