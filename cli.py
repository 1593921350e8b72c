"""semdepth command line: one sub-command per pipeline stage (what dvc.yaml calls), plus tools.

The stage commands and their `--help` come from the pipeline map (semdepth/layout.py STAGES), so the
help names exactly the params and files each stage declares. Heavy libraries (torch, mlflow, dvc) and
the stage modules are imported inside the commands so `--help` stays instant.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from semdepth.layout import STAGES

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

    module = importlib.import_module(f"stages.{stage}")
    try:
        if _maybe_torchrun(stage, params):
            return
        module.main(params)
    except (ConfigError, SemdepthError) as e:
        _fail(str(e))


def _stage_command(name: str) -> Callable[[Path], None]:
    """The sub-command that runs stage `name` (what dvc.yaml calls)."""
    def command(params: Path = ParamsOpt) -> None:
        _run(name, params)

    command.__name__ = name
    return command


for _name, _spec in STAGES.items():
    app.command(name=_name, help=_spec.help())(_stage_command(_name))


@app.command()
def predict(inputs: List[Path] = typer.Argument(..., help="Images or folders of images."),
            out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder."),
            raw: bool = typer.Option(False, "--raw", help="Also write raw arrays (.npy)."),
            params: Path = ParamsOpt) -> None:
    """Colourised depth and segmentation for any images, with the trained models."""
    from semdepth import SemdepthError
    from semdepth.config import ConfigError
    from stages.predict import main as predict_main

    try:
        predict_main(inputs, out, raw, params)
    except (ConfigError, SemdepthError) as e:
        _fail(str(e))


@app.command()
def ablate(names: Optional[List[str]] = typer.Argument(None, help="Ablations to queue (default: the seven of "
                                                       "Hoyer et al.'s table; see semdepth/ablations.py)."),
           seeds: Optional[str] = typer.Option(None, "--seeds", help="Queue each ablation once per seed: a count "
                                               "N (seeds 42, 43, ...) or a list '42,43,44'. Experiments are named "
                                               "<ablation>-s<seed>."),
           run: bool = typer.Option(False, "--run", help="Also start the queue (dvc queue start)."),
           jobs: int = typer.Option(1, "--jobs", "-j", help="Parallel queue workers.")) -> None:
    """Queue the paper's ablations as DVC experiments (dvc exp run --queue)."""
    from semdepth import SemdepthError

    from stages.ablate import queue_ablations

    try:
        queue_ablations(names or None, run, jobs, seeds)
    except SemdepthError as e:
        _fail(str(e))


@app.command()
def report(out: Optional[Path] = typer.Option(None, "--out", help="Write the markdown here too."),
           num: int = typer.Option(1, "--num", "-n",
                                   help="Commits back from HEAD whose experiments to include (dvc exp show -n)."),
           metric: str = typer.Option("mIoU", "--metric", "-m", help="The column the seeded summary compares."),
           reference: Optional[str] = typer.Option(None, "--reference", "-r", help="The ablation the paired "
                                                   "differences are taken to (default: scratch, or guidance-none)."),
           ) -> None:
    """The seeded ablation table (mean ± std, paired 95% intervals, share of the oracle; also
    metrics/figures/ablations.png and metrics/plots/ablations.csv) and one row per experiment."""
    from semdepth import SemdepthError

    from stages.ablate import report as report_main

    try:
        report_main(out, num, metric, reference)
    except SemdepthError as e:
        _fail(str(e))


if __name__ == "__main__":
    app()
