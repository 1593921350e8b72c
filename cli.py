"""semdepth command line: one sub-command per pipeline stage (what dvc.yaml calls), plus tools.

Heavy libraries (torch, mlflow, dvc) are imported inside the commands so `--help` stays instant.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Self-supervised depth as the teacher for semantic segmentation: the pipeline's stages.")

ParamsOpt = typer.Option("params.yaml", "--params", "-p", help="Params file (validated strictly).")

# Stages that train networks and may run under torchrun when compute.nproc > 1.
DISTRIBUTED = {"pretrain", "retrain", "finetune"}


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _maybe_torchrun(stage: str, params: Path) -> bool:
    """Relaunch this command under torchrun when compute.nproc > 1; True if it did."""
    if stage not in DISTRIBUTED or "LOCAL_RANK" in os.environ:
        return False
    from semdepth.config import load_params

    nproc = load_params(params).compute.nproc
    if nproc <= 1:
        return False
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), stage, "--params", str(params)]
    rc = subprocess.call(cmd)
    if rc:
        raise typer.Exit(rc)
    return True


def _run(stage: str, params: Path) -> None:
    from semdepth import SemdepthError
    from semdepth.config import ConfigError

    try:
        module = importlib.import_module(f"stages.{stage}")
    except ModuleNotFoundError as e:
        if e.name == f"stages.{stage}":
            _fail(f"stage '{stage}' is not built yet", 1)
        raise
    try:
        if _maybe_torchrun(stage, params):
            return
        module.main(params)
    except (ConfigError, SemdepthError) as e:
        _fail(str(e))


@app.command()
def synthesize(params: Path = ParamsOpt) -> None:
    """Render SynthCity. Reads: synth, seed, compute. Writes: data/raw/synthcity/ (Cityscapes layout +
    depth/, pose/, moving/ extras, snippets.csv), metrics/synthesize.json."""
    _run("synthesize", params)


@app.command()
def downsample(params: Path = ParamsOpt) -> None:
    """Prepare a Cityscapes-layout root at the working resolution. Reads: data.raw_dir, data.height,
    data.width, data.frame_offsets, data.splits, data.workers. Writes: data/prepared/ with
    manifest.parquet, metrics/downsample.json."""
    _run("downsample", params)


@app.command()
def pseudolabel(params: Path = ParamsOpt) -> None:
    """DeepLabV3 pseudo-labels for every prepared frame. Reads: pseudolabel, data/prepared/.
    Writes: data/pseudolabels/ (train ids, confidence, foreground PNGs, pseudolabels.parquet),
    data/models/pseudolabel.pt, metrics/pseudolabel.json, metrics/plots/pseudolabel_loss.csv."""
    _run("pseudolabel", params)


@app.command()
def pretrain(params: Path = ParamsOpt) -> None:
    """Stage-1 self-supervised depth and pose on all train sequences. Reads: sde, data/prepared/,
    data/pseudolabels/. Writes: data/models/sde_stage1.pt, metrics/pretrain.json,
    metrics/plots/pretrain_loss.csv."""
    _run("pretrain", params)


@app.command()
def select(params: Path = ParamsOpt) -> None:
    """Choose the frames to annotate (Hoyer Alg. 1). Reads: select, data.hood_fraction,
    data/models/sde_stage1.pt, data/prepared/. Writes: data/selection/selection.parquet,
    metrics/select.json."""
    _run("select", params)


@app.command(name="filter")
def filter_(params: Path = ParamsOpt) -> None:
    """RANSAC ground-plane filter on stage-1 depth. Reads: filter, seed, data.hood_fraction,
    data/prepared/, data/pseudolabels/, data/models/sde_stage1.pt. Writes: data/filter/frames.parquet,
    metrics/filter.json, metrics/figures/filter/dropped.png."""
    _run("filter", params)


@app.command()
def retrain(params: Path = ParamsOpt) -> None:
    """Stage-2 depth from scratch on the kept frames. Reads: sde, data/filter/frames.parquet.
    Writes: data/models/sde_stage2.pt, metrics/retrain.json, metrics/plots/retrain_loss.csv."""
    _run("retrain", params)


@app.command()
def finetune(params: Path = ParamsOpt) -> None:
    """Semi-supervised segmentation (SDE transfer, multi-task, DepthMix, mean teacher). Reads: finetune,
    select.n_labels, data/selection/selection.parquet, data/models/sde_stage2.pt. Writes:
    data/models/segmenter.pt, metrics/finetune.json, metrics/plots/finetune_loss.csv."""
    _run("finetune", params)


@app.command()
def evaluate(params: Path = ParamsOpt) -> None:
    """Segmentation and depth evaluation on val. Reads: eval, the trained models. Writes:
    metrics/eval.json, metrics/plots/*.csv, metrics/figures/*.png."""
    _run("evaluate", params)


@app.command()
def predict(inputs: List[Path] = typer.Argument(..., help="Images or folders of images."),
            out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder."),
            raw: bool = typer.Option(False, "--raw", help="Also write raw arrays (.npy)."),
            params: Path = ParamsOpt) -> None:
    """Colourised depth and segmentation for any images, with the trained models."""
    from semdepth import SemdepthError
    from semdepth.config import ConfigError

    try:
        from stages.predict import main as predict_main
    except ModuleNotFoundError:
        _fail("predict is not built yet", 1)
    try:
        predict_main(inputs, out, raw, params)
    except (ConfigError, SemdepthError) as e:
        _fail(str(e))


@app.command()
def ablate(names: Optional[List[str]] = typer.Argument(None, help="Subset of ablations (default: all)."),
           run: bool = typer.Option(False, "--run", help="Also start the queue (dvc queue start)."),
           jobs: int = typer.Option(1, "--jobs", "-j", help="Parallel queue workers.")) -> None:
    """Queue the paper's ablations as DVC experiments (dvc exp run --queue)."""
    try:
        from stages.ablate import queue_ablations
    except ModuleNotFoundError:
        _fail("ablate is not built yet", 1)
    queue_ablations(names or None, run, jobs)


@app.command()
def report(out: Optional[Path] = typer.Option(None, "--out", help="Write the markdown here too."),
           num: int = typer.Option(1, "--num", "-n",
                                   help="Commits back from HEAD whose experiments to include (dvc exp show -n).")
           ) -> None:
    """Markdown table of experiments (dvc exp show --json): mIoU and depth metrics per experiment."""
    try:
        from stages.ablate import report as report_main
    except ModuleNotFoundError:
        _fail("report is not built yet", 1)
    report_main(out, num)


if __name__ == "__main__":
    app()
