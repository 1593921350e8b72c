"""Resumable checkpoints.

A stage killed midway must pick up where it stopped, but only if it is the *same* job: the resume
directory is keyed by a hash of the config that defines the result, so changed params start fresh.
Checkpoints are written atomically and loaded with `weights_only=True`; the directory is removed when
the stage completes (it is not a DVC output).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from semdepth.io import atomic_file


def config_key(config: Any) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Resumer:
    """`state = r.load()` at start (None if fresh); `r.save(state)` every K steps; `r.done()` at end.

    `root` holds one directory per job (the stages pass semdepth/layout.py's RESUME_ROOT)."""

    def __init__(self, stage: str, config: Any, root: Path) -> None:
        self.dir = Path(root) / f"{stage}-{config_key(config)}"
        self.path = self.dir / "last.pt"

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path) as tmp:
            torch.save(state, tmp)

    def done(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def rng_state() -> dict:
    """CPU RNG state (torch + numpy + python) so a resumed run draws the same batches."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": json.dumps(random.getstate()),
    }


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
