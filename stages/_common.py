"""What every stage does around its own work: params, runtime setup, tracking, metrics file.

Only rank 0 of a DDP job (or the single process) writes metrics and tracks.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from semdepth.config import Params, flatten, load_params, to_dict
from semdepth.io import write_json
from semdepth.runtime import get_logger, setup
from semdepth.tracking import Tracker, flat_metrics, stage_run

METRICS_DIR = Path("metrics")
PLOTS_DIR = METRICS_DIR / "plots"
FIGURES_DIR = METRICS_DIR / "figures"


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class StageContext:
    name: str
    params: Params
    device: Any
    tracker: Tracker
    started: float = field(default_factory=time.perf_counter)

    @property
    def log(self):
        return get_logger(f"semdepth.{self.name}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write_metrics(self, metrics: dict[str, Any], step: int | None = None) -> Path:
        """metrics/<stage>.json (what DVC diffs) and the same numbers to MLflow."""
        path = METRICS_DIR / f"{self.name}.json"
        if is_rank0():
            write_json(path, metrics)
            self.tracker.log_metrics(flat_metrics(metrics), step=step)
            self.tracker.log_artifact(path)
        return path


@contextmanager
def stage(name: str, params_path: str | Path, groups: list[str]) -> Iterator[StageContext]:
    """Load and validate params, seed, pick the device and open the MLflow run for `name`.

    `groups` are the params groups the stage reads; they (plus seed) are logged as run params.
    """
    params = load_params(params_path)
    device = setup(params.seed, params.compute)
    logged = {"seed": params.seed}
    for g in groups:
        logged.update(flatten(to_dict(getattr(params, g)), g + "."))
    enabled = params.tracking.enabled and is_rank0()
    with stage_run(name, logged, enabled, params.tracking.experiment) as tracker:
        yield StageContext(name, params, device, tracker)
