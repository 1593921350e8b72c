"""The training loop every trainer shares (SDE, finetune, the pseudo-label DeepLab).

Modelled on torchvision's segmentation reference: plain functions that take everything they use as
arguments, no trainer base class. A trainer supplies two things:

- its *step*, in two halves: `forward(i, batch) -> (loss, values)` computes the loss of step `i` and
  the numbers to log for it (in the order of the loss CSV's columns); `update(i, loss)` does the
  rest (backward, optimiser, schedules, EMA). The loop checks the loss in between: a backward pass
  through a non-finite loss can kill the process (the SDE's segfaults on CPU) instead of stopping it
  with a readable message;
- its *state* (`Checkpoints.state` / `Checkpoints.load`): what a resume checkpoint must hold for it
  (models, optimisers, schedulers, ...).

The loop owns the rest, so the three trainers cannot drift apart in it: resume (the loop adds the
step, the global RNG state and the loss rows to every checkpoint and restores them, so a killed and
resumed run draws the same numbers as an uninterrupted one), the finite-loss guard, the loss log, the
checkpoint cadence, the progress bar, and DDP's rank rules (rank 0 alone logs, tracks and saves).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from semdepth.progress import bar
from semdepth.runtime import get_logger
from semdepth.training import ddp
from semdepth.training.guards import check_finite
from semdepth.training.loss_log import LossLog
from semdepth.training.resume import Resumer, rng_state, set_rng_state

log = get_logger("semdepth.training")

ForwardFn = Callable[[int, Any], tuple[torch.Tensor, dict[str, float]]]
UpdateFn = Callable[[int, torch.Tensor], None]
OnStep = Callable[[int, dict[str, float]], "bool | None"]


@dataclass
class TrainResult:
    """What a training run did; the trained models are the trainer's own (trained in place)."""

    steps: int  # steps done in total, a resumed part included
    resumed_from: int  # the step this process started at (0: a fresh run)
    seconds: float  # wall time of the steps run in this process
    loss_log: LossLog
    data_wait: float = 0.0  # seconds of `seconds` spent waiting for batches

    @property
    def steps_run(self) -> int:
        """Steps run in this process (a resumed run excludes what the killed one did)."""
        return self.steps - self.resumed_from

    @property
    def steps_per_s(self) -> float:
        return self.steps_run / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Checkpoints:
    """Where and how often a trainer's resume state is saved, and what that state is.

    The cadence differs between trainers on purpose: `at_end` also saves after the last step, so a
    stage killed while writing its outputs does not train again when rerun (the SDE stages evaluate for
    a while after training); `barrier` makes the other DDP ranks wait until rank 0 has saved.
    """

    resumer: Resumer | None  # None: never save, never resume
    every: int
    state: Callable[[], dict]  # the trainer's part of a checkpoint
    load: Callable[[dict], None]  # restores that part from a checkpoint
    at_end: bool = False
    barrier: bool = False
    loss_csv: Path | None = None  # also write the loss curve so far with every checkpoint

    def due(self, done: int, steps: int) -> bool:
        if self.resumer is None:
            return False
        return self.at_end if done == steps else done % self.every == 0

    def save(self, done: int, loss_log: LossLog) -> None:
        if ddp.world()[0] == 0:
            self.resumer.save({**self.state(), "step": done, "rng": rng_state(), "loss_rows": loss_log.rows})
            if self.loss_csv is not None:
                loss_log.write(self.loss_csv)
        if self.barrier:
            ddp.barrier()


def resume(checkpoints: Checkpoints, loss_log: LossLog, name: str) -> int:
    """Restore the last checkpoint if there is one: the trainer's state, the loss rows and the global
    RNG state (last, so nothing the trainer does while loading draws from the restored stream).
    Returns the step to continue from; 0 when there is nothing to resume."""
    state = checkpoints.resumer.load() if checkpoints.resumer is not None else None
    if state is None:
        return 0
    checkpoints.load(state)
    loss_log.load(state["loss_rows"])
    set_rng_state(state["rng"])
    start = int(state["step"])
    if ddp.world()[0] == 0:
        log.info("%s: resuming at step %d", name, start)
    return start


def train_steps(forward: ForwardFn, update: UpdateFn, batches: Iterable, *, start: int, steps: int, name: str,
                loss_log: LossLog, checkpoints: Checkpoints | None = None, tracker: Any = None,
                show: Sequence[str] = ("loss",), progress: bool = True, interrupt_at: int | None = None,
                on_step: OnStep | None = None) -> TrainResult:
    """Run steps `start` .. `steps`-1, one batch of `batches` each (the iterable must start at `start`).

    Between `forward` and `update` the guard stops on a non-finite loss (naming `name` and the step).
    After the update the values are logged (and tracked by rank 0), the bar shows the `show` values,
    and a checkpoint is saved when due. `interrupt_at` raises KeyboardInterrupt once that many steps
    are done (tests simulate a kill with it). `on_step(done, values)` is called last; returning True
    stops after this step, and the result then reports `done` steps.
    """
    if start >= steps:
        return TrainResult(start, start, 0.0, loss_log)
    rank = ddp.world()[0]
    it = iter(batches)
    wait = 0.0
    done = start
    t0 = time.perf_counter()
    with (bar(name, steps, start) if progress and rank == 0 else contextlib.nullcontext()) as pb:
        for i in range(start, steps):
            tw = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - tw
            loss, values = forward(i, batch)
            check_finite(loss, i, name)
            update(i, loss)
            loss_log.add(i, tracker if rank == 0 else None, **values)
            if pb is not None:
                pb.update(**{k: values[k] for k in show if k in values})
            done = i + 1
            if checkpoints is not None and checkpoints.due(done, steps):
                checkpoints.save(done, loss_log)
            if interrupt_at is not None and done >= interrupt_at:
                raise KeyboardInterrupt(f"interrupted after step {done}")
            if on_step is not None and on_step(done, values):
                break
    seconds = time.perf_counter() - t0
    del it  # stops the DataLoader's workers before the caller evaluates
    return TrainResult(done, start, seconds, loss_log, wait)
