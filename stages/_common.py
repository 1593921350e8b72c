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

from semdepth.config import declared_values, load_params, scoped
from semdepth.io import write_json
from semdepth.layout import STAGES
from semdepth.runtime import get_logger, setup
from semdepth.tracking import Tracker, flat_metrics, stage_run


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class StageContext:
    name: str
    params: Any  # the stage's scoped view of Params (semdepth.config.scoped)
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
        path = STAGES[self.name].metrics
        if is_rank0():
            write_json(path, metrics)
            self.tracker.log_metrics(flat_metrics(metrics), step=step)
            self.tracker.log_artifact(path)
        return path


@contextmanager
def stage(name: str, params_path: str | Path) -> Iterator[StageContext]:
    """Load and validate params, seed, pick the device and open the MLflow run for stage `name`.

    The stage sees only the params semdepth/layout.py declares for it (what dvc.yaml lists), and
    exactly those are logged as the run's params. The global RNGs are seeded with the stage's own
    seed param (`StageSpec.seed_key`: `sde.seed` for the depth stages, `finetune.seed`, or `seed`) and
    with 0 in stages without one, so no seed changes a result without DVC rerunning the stage.
    """
    spec = STAGES[name]
    params = load_params(params_path)
    device = setup(int(declared_values(params, [spec.seed_key])[spec.seed_key]) if spec.seed_key else 0,
                   params.compute)
    logged = declared_values(params, spec.params)
    enabled = params.tracking.enabled and is_rank0()
    with stage_run(name, logged, enabled, params.tracking.experiment) as tracker:
        yield StageContext(name, scoped(params, name, spec.params, spec.speed_only), device, tracker)
