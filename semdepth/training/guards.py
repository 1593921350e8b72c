"""Fail fast and clearly when training diverges."""
from __future__ import annotations

import math

import torch

from semdepth import SemdepthError


def check_finite(loss: torch.Tensor | float, step: int, stage: str) -> float:
    """Return the loss as a float, or stop the stage with a one-line message on NaN/inf."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise SemdepthError(f"{stage}: loss became {value} at step {step}; lower the learning rate "
                            f"or check the inputs (training stopped, no output written)")
    return value
