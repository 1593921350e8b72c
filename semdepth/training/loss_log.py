"""Loss curves as CSV (DVC plots) plus MLflow metrics, with a summary for the metrics JSON."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from semdepth.io import write_csv_rows


class LossLog:
    def __init__(self, every: int = 1) -> None:
        self.rows: list[dict] = []
        self.every = max(1, every)

    def add(self, step: int, tracker=None, **values: float) -> None:
        if step % self.every == 0:
            self.rows.append({"step": step, **{k: float(v) for k, v in values.items()}})
            if tracker is not None:
                tracker.log_metrics({f"train/{k}": v for k, v in values.items()}, step=step)

    def load(self, rows: list[dict]) -> None:
        self.rows = list(rows)

    def write(self, path: str | Path) -> None:
        write_csv_rows(path, self.rows)

    def summary(self, key: str = "loss") -> dict[str, float]:
        """First/last/min of a curve; 'last' averages the last tenth to smooth noise."""
        vals = np.array([r[key] for r in self.rows if key in r], dtype=float)
        if not len(vals):
            return {}
        tail = max(1, len(vals) // 10)
        return {"first": float(vals[0]), "last": float(vals[-tail:].mean()), "min": float(vals.min()),
                "steps_logged": int(len(vals))}
