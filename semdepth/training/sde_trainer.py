"""The SDE trainer shared by pretrain and retrain (and reusable by finetune's depth branch).

One step: the depth net sees the (jittered) target frame, the pose net sees both temporally ordered
pairs in one batched call, and monodepth2's objective (semdepth.losses.reprojection) scores the
warped un-jittered sources. Guided depth nets add their own terms through `DepthNet.aux_losses`.

With a pretrained encoder (ImageNet or the source-domain pseudo-label backbone) Hoyer et al.'s two
phases apply: phase 1 (`phase1_steps`) trains decoder and pose with the encoder frozen (weights and
BatchNorm statistics: a randomly initialised decoder would otherwise push large, uninformative
gradients into good features); phase 2 trains everything with `phase2_lr` plus the feature distance
to a frozen copy of the initial encoder. From scratch there is one phase at `lr`.

Resumable: every `checkpoint_every` steps the full state (models, optimizer, scheduler, step, RNG,
loss log) is saved; data order and augmentation are a function of the step (semdepth.data.sequence),
so a killed and resumed run reaches the same weights as an uninterrupted one on CPU.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from semdepth import SemdepthError
from semdepth.config import SdeConfig, to_dict
from semdepth.data.sequence import TripletDataset, triplet_loader
from semdepth.geometry.camera import pose_vec_to_mat
from semdepth.losses.feature_distance import FeatureDistance
from semdepth.losses.reprojection import ObjectiveConfig, self_supervised_loss
from semdepth.models.sde import DepthNet, build_depth_net, build_pose_net
from semdepth.progress import bar
from semdepth.runtime import get_logger
from semdepth.training import ddp
from semdepth.training.guards import check_finite
from semdepth.training.loss_log import LossLog
from semdepth.training.resume import RESUME_ROOT, Resumer, rng_state, set_rng_state

log = get_logger("semdepth.sde")


def objective_config(cfg: SdeConfig, **overrides: Any) -> ObjectiveConfig:
    return ObjectiveConfig(min_depth=cfg.min_depth, max_depth=cfg.max_depth, smoothness=cfg.smoothness, **overrides)


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def step_losses(depth_net: nn.Module, pose_net: nn.Module, batch: Mapping[str, Any], ocfg: ObjectiveConfig,
                fdist: FeatureDistance | None = None, amp_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All loss terms of one batch; "loss" is the total with gradients, the rest are detached."""
    x = batch["aug_0"]
    b = x.shape[0]
    device_type = x.device.type
    amp = torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with amp:
        out = depth_net(x, batch)
        # Temporal order for both pairs (monodepth2): (t-1, t) gives T_{t,t-1}, inverted below.
        axisangle, translation = pose_net(torch.cat([batch["aug_-1"], x]), torch.cat([x, batch["aug_1"]]))
    axisangle, translation = axisangle.float(), translation.float()
    T_prev = pose_vec_to_mat(axisangle[:b], translation[:b], invert=True)  # T_{t-1,t}
    T_next = pose_vec_to_mat(axisangle[b:], translation[b:])  # T_{t+1,t}
    disps = {s: d.float() for s, d in out["disp"].items()}
    terms = self_supervised_loss(disps, batch["color_0"], [batch["color_-1"], batch["color_1"]],
                                 [T_prev, T_next], batch["K"], batch["inv_K"], ocfg)
    total = terms["loss"]
    result = {k: v for k, v in terms.items() if k not in ("loss", "identity_mask")}
    if fdist is not None:
        fd = fdist(x, out["encoder"][-1].float())
        total = total + fd
        result["feature_distance"] = fd.detach()
    for name, term in ddp.unwrap(depth_net).aux_losses(out, batch).items():
        total = total + term
        result[name] = term.detach()
    result["t_z"] = translation[b:, 2].mean().detach()  # forward motion shows as t_z < 0
    result["loss"] = total
    return result


@dataclass
class TrainResult:
    depth_net: DepthNet
    pose_net: nn.Module
    steps: int
    seconds: float  # wall time of the steps run in this process (excludes a resumed part)
    steps_run: int
    loss_log: LossLog
    data_wait: float  # seconds spent waiting for batches
    extra: dict = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        return self.steps_run / self.seconds if self.seconds > 0 else float("nan")


class SdeTrainer:
    """Build, (resume,) train; `finish()` removes the resume checkpoint once outputs are written."""

    def __init__(self, cfg: SdeConfig, dataset: TripletDataset, device: torch.device, *, seed: int,
                 num_workers: int = 1, pretrained: str | Path | None = None, tracker=None,
                 resume_name: str | None = "sde", resume_root: Path = RESUME_ROOT, description: str = "sde",
                 log_every: int | None = None, channels_last: bool = False,
                 objective: ObjectiveConfig | None = None, progress: bool = True,
                 pseudolabel_model: str | Path | None = None) -> None:
        self.cfg, self.dataset, self.seed = cfg, dataset, seed
        self.device = ddp.init(device)
        self.rank, self.world = ddp.world()
        self.num_workers, self.tracker, self.description = num_workers, tracker, description
        self.channels_last, self.progress = channels_last, progress
        self.pretrained = None if pretrained in (None, "", "none") else pretrained
        self.ocfg = objective or objective_config(cfg)
        self.log_every = log_every or max(1, cfg.steps // 500)
        # Guidance (issue 10): the training-time network (seg_branch's head; pac's frozen DeepLab from
        # `pseudolabel_model`); guidance "none" ignores these and builds the plain network.
        self.depth_net = build_depth_net(cfg, self.pretrained, training=True,
                                         pseudolabel_model=pseudolabel_model).to(self.device)
        self.pose_net = build_pose_net(cfg).to(self.device)
        if channels_last:
            self.depth_net.to(memory_format=torch.channels_last)
            self.pose_net.to(memory_format=torch.channels_last)
        # Frozen copy of the *initial* encoder for phase 2 (taken before any resume state is loaded).
        self.fdist = (FeatureDistance(self.depth_net.encoder, cfg.feature_distance).to(self.device)
                      if self.pretrained is not None and cfg.feature_distance > 0 else None)
        self.amp_dtype = None
        if self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        key = {"sde": to_dict(cfg), "seed": seed, "ids": dataset.ids, "pretrained": str(self.pretrained),
               "world": self.world}
        self.resumer = Resumer(resume_name, key, resume_root) if resume_name else None
        self.phase = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self._depth, self._pose = self.depth_net, self.pose_net  # possibly DDP-wrapped

    # ------------------------------------------------------------------ phases
    def phase_of(self, step: int) -> int:
        """0: single phase from scratch; 1: encoder frozen; 2: all trainable + feature distance."""
        if self.pretrained is None:
            return 0
        return 1 if step < self.cfg.phase1_steps else 2

    def _set_phase(self, phase: int) -> None:
        self.phase = phase
        enc = self.depth_net.encoder
        enc.requires_grad_(phase != 1)
        if phase == 1:
            params = [p for n, p in self.depth_net.named_parameters() if not n.startswith("encoder.")]
            lr = self.cfg.lr
        else:
            params = list(self.depth_net.parameters())
            lr = self.cfg.phase2_lr if phase == 2 else self.cfg.lr
        params += list(self.pose_net.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, self.cfg.lr_step, self.cfg.lr_decay)
        # DDP registers the parameters that need gradients at construction: re-wrap on a phase change.
        self._depth = ddp.wrap(self.depth_net, self.device)
        self._pose = ddp.wrap(self.pose_net, self.device)
        self._train_mode()

    def _train_mode(self) -> None:
        self.depth_net.train()
        self.pose_net.train()
        if self.phase == 1:
            self.depth_net.encoder.eval()  # frozen means frozen BatchNorm statistics too
        if self.fdist is not None:
            self.fdist.train(self.depth_net.encoder.training)

    # ------------------------------------------------------------------ state
    def _state(self, step: int, loss_log: LossLog) -> dict:
        return {"step": step, "phase": self.phase, "depth": self.depth_net.state_dict(),
                "pose": self.pose_net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "loss_rows": loss_log.rows}

    def _load(self, state: dict, loss_log: LossLog) -> int:
        self.depth_net.load_state_dict(state["depth"])
        self.pose_net.load_state_dict(state["pose"])
        self._set_phase(int(state["phase"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        loss_log.load(state["loss_rows"])
        return int(state["step"])

    # ------------------------------------------------------------------ loop
    def train(self, interrupt_at: int | None = None,
              on_step: Callable[[int, dict[str, float]], bool | None] | None = None) -> TrainResult:
        """Run (or finish) `cfg.steps` steps. `interrupt_at` raises KeyboardInterrupt after that step
        (tests simulate a kill with it).

        `on_step(done, losses)` is called after each optimizer step with the number of steps done and
        that step's loss terms, so a caller can evaluate `self.depth_net` mid-run (the convergence
        benchmark) without a second training loop; the trainer restores its train/eval modes after it.
        Returning True stops after this step (wall-clock budgets): the result then reports `done` steps."""
        cfg = self.cfg
        loss_log = LossLog(self.log_every)
        start = 0
        state = self.resumer.load() if self.resumer else None
        if state is not None:
            start = self._load(state, loss_log)
            if self.rank == 0:
                log.info("%s: resuming at step %d of %d", self.description, start, cfg.steps)
        else:
            self._set_phase(self.phase_of(0))
        if start >= cfg.steps:
            return TrainResult(self.depth_net, self.pose_net, start, 0.0, 0, loss_log, 0.0)
        loader = triplet_loader(self.dataset, cfg.batch_size, self.seed, start, self.num_workers, self.rank,
                                self.world, pin_memory=self.device.type == "cuda")
        it = iter(loader)
        wait = 0.0
        t0 = time.perf_counter()
        progress = bar(self.description, cfg.steps, start) if (self.progress and self.rank == 0) else contextlib.nullcontext()
        with progress as pb:
            for step in range(start, cfg.steps):
                if self.phase_of(step) != self.phase:
                    self._set_phase(self.phase_of(step))
                    if self.rank == 0:
                        log.info("%s: phase %d from step %d", self.description, self.phase, step)
                tw = time.perf_counter()
                batch = to_device(next(it), self.device, self.channels_last)
                wait += time.perf_counter() - tw
                losses = step_losses(self._depth, self._pose, batch, self.ocfg,
                                     self.fdist if self.phase == 2 else None, self.amp_dtype)
                value = check_finite(losses["loss"], step, self.description)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(losses["loss"]).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                shown = {"loss": value, **{k: float(v) for k, v in losses.items() if k != "loss"}}
                loss_log.add(step, self.tracker if self.rank == 0 else None, **shown)
                if pb is not None:
                    pb.update(loss=value, t_z=shown["t_z"])
                done = step + 1
                if self.resumer and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                    if self.rank == 0:
                        self.resumer.save(self._state(done, loss_log))
                    ddp.barrier()
                if interrupt_at is not None and done >= interrupt_at:
                    raise KeyboardInterrupt(f"interrupted after step {done}")
                if on_step is not None:
                    stop = on_step(done, shown)
                    self._train_mode()  # the callback may have switched the nets to eval
                    if stop:
                        break
        seconds = time.perf_counter() - t0
        del it, loader
        self.depth_net.eval()
        self.pose_net.eval()
        return TrainResult(self.depth_net, self.pose_net, done, seconds, done - start, loss_log, wait)

    def finish(self) -> None:
        """Drop the resume checkpoint (call after the stage's outputs are written)."""
        if self.resumer and self.rank == 0:
            self.resumer.done()
