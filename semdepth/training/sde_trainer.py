"""The SDE trainer shared by pretrain and retrain (and reusable by finetune's depth branch).

One step: the depth net sees the (jittered) target frame, the pose net sees both temporally ordered
pairs in one batched call, and monodepth2's objective (semdepth.losses.reprojection) scores the
warped un-jittered sources. Guided depth nets add their own terms through `DepthNet.aux_losses`.

With a pretrained encoder (ImageNet or the source-domain pseudo-label backbone) Hoyer et al.'s two
phases apply: phase 1 (`phase1_steps`) trains decoder and pose with the encoder frozen (weights and
BatchNorm statistics: a randomly initialised decoder would otherwise push large, uninformative
gradients into good features); phase 2 trains everything with `phase2_lr` plus the feature distance
to a frozen copy of the initial encoder. From scratch there is one phase at `lr`.

Resumable (semdepth.training.loop): every `checkpoint_every` steps and after the last one the full
state (models, optimizer, scheduler, step, RNG, loss log) is saved; data order and augmentation are
a function of the step (semdepth.data.sequence), so a killed and resumed run reaches the same weights
as an uninterrupted one on CPU.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from semdepth import SemdepthError
from semdepth.config import SdeConfig, to_dict
from semdepth.data.sequence import TRIPLET, TripletDataset, triplet_loader
from semdepth.geometry.camera import pose_vec_to_mat, source_poses
from semdepth.losses.feature_distance import FeatureDistance
from semdepth.losses.reprojection import ObjectiveConfig, self_supervised_loss
from semdepth.models.sde import build_depth_net, build_pose_net
from semdepth.runtime import get_logger
from semdepth.training import ddp, loop
from semdepth.training.loop import TrainResult
from semdepth.training.loss_log import LossLog
from semdepth.training.resume import Resumer

log = get_logger("semdepth.sde")


def objective_config(cfg: SdeConfig, **overrides: Any) -> ObjectiveConfig:
    return ObjectiveConfig(min_depth=cfg.min_depth, max_depth=cfg.max_depth, smoothness=cfg.smoothness,
                           automask=cfg.automask, **overrides)


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def pose_inputs(batch: Mapping[str, Any], source_offsets: Sequence[int],
                pose_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The pose net's two inputs for all sources in one batched call, each pair in temporal order as
    monodepth2 feeds it: (s, t) for an earlier source s, (t, s) for a later one. With `pose_scale` < 1
    both are area-resized: the pose net outputs one global motion, so it needs less resolution than
    the depth net, and at full size it is about a third of the step (docs/method.md §3.5)."""
    x = batch["aug_0"]
    first = torch.cat([batch[f"aug_{o}"] if o < 0 else x for o in source_offsets])
    second = torch.cat([x if o < 0 else batch[f"aug_{o}"] for o in source_offsets])
    if pose_scale != 1.0:
        size = (max(1, round(x.shape[-2] * pose_scale)), max(1, round(x.shape[-1] * pose_scale)))
        first, second = (F.interpolate(t, size=size, mode="area") for t in (first, second))
    return first, second


def pair_poses(axisangle: torch.Tensor, translation: torch.Tensor, source_offsets: Sequence[int],
               n: int) -> list[torch.Tensor]:
    """Pose-net outputs [S·n,3] of `pose_inputs` -> T_{s<-t} [n,4,4] per source: an earlier source's
    pair gives T_{t<-s}, which is inverted; a later one's gives T_{s<-t} directly. [-1, 1] is
    semdepth.geometry.camera.source_poses."""
    if tuple(source_offsets) == TRIPLET:
        return list(source_poses(axisangle, translation, n))
    return [pose_vec_to_mat(axisangle[i * n:(i + 1) * n], translation[i * n:(i + 1) * n], invert=o < 0)
            for i, o in enumerate(source_offsets)]


def forward_motion(translation: torch.Tensor, source_offsets: Sequence[int], n: int) -> torch.Tensor:
    """Mean t_z per frame of the pair nearest the target, a later one if any (< 0: forward motion)."""
    offsets = list(source_offsets)
    later = [o for o in offsets if o > 0]
    o = min(later) if later else max(offsets)
    i = offsets.index(o)
    t_z = translation[i * n:(i + 1) * n, 2].mean()
    return t_z if abs(o) == 1 else t_z / abs(o)


def step_losses(depth_net: nn.Module, pose_net: nn.Module, batch: Mapping[str, Any], ocfg: ObjectiveConfig,
                fdist: FeatureDistance | None = None, amp_dtype: torch.dtype | None = None, *,
                source_offsets: Sequence[int] = TRIPLET, pose_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """All loss terms of one batch; "loss" is the total with gradients, the rest are detached.

    `source_offsets` are the batch's photometric sources (`sde.source_offsets`: the dataset's); the
    per-pixel minimum runs over all of them and their identity errors."""
    x = batch["aug_0"]
    b = x.shape[0]
    device_type = x.device.type
    amp = torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with amp:
        out = depth_net(x, batch)
        axisangle, translation = pose_net(*pose_inputs(batch, source_offsets, pose_scale))
    axisangle, translation = axisangle.float(), translation.float()
    poses = pair_poses(axisangle, translation, source_offsets, b)  # T_{s,t} per source s
    disps = {s: d.float() for s, d in out["disp"].items()}
    terms = self_supervised_loss(disps, batch["color_0"], [batch[f"color_{o}"] for o in source_offsets],
                                 poses, batch["K"], batch["inv_K"], ocfg)
    total = terms["loss"]
    result = {k: v for k, v in terms.items() if k not in ("loss", "identity_mask")}
    if fdist is not None:
        fd = fdist(x, out["encoder"][-1].float())
        total = total + fd
        result["feature_distance"] = fd.detach()
    for name, term in ddp.unwrap(depth_net).aux_losses(out, batch).items():
        total = total + term
        result[name] = term.detach()
    result["t_z"] = forward_motion(translation, source_offsets, b).detach()  # forward motion: t_z < 0
    result["loss"] = total
    return result


class SdeTrainer:
    """Build, (resume,) train; `finish()` removes the resume checkpoint once outputs are written.

    `resume_root` is where resume checkpoints live (the stages pass semdepth/layout.py's RESUME_ROOT);
    None, or `resume_name` None, never saves and never resumes (benchmarks)."""

    def __init__(self, cfg: SdeConfig, dataset: TripletDataset, device: torch.device, *, seed: int,
                 resume_root: Path | None, num_workers: int = 1, pretrained: str | Path | None = None, tracker=None,
                 resume_name: str | None = "sde", description: str = "sde",
                 log_every: int | None = None, channels_last: bool = False,
                 objective: ObjectiveConfig | None = None, progress: bool = True,
                 pseudolabel_model: str | Path | None = None) -> None:
        if dataset.source_offsets != tuple(cfg.source_offsets):
            raise SemdepthError(f"sde.source_offsets: {list(cfg.source_offsets)}, but the dataset was built with "
                                f"sources {list(dataset.source_offsets)}")
        self.cfg, self.dataset, self.seed = cfg, dataset, seed
        self.device = ddp.init(device)
        self.rank, self.world = ddp.world()
        self.num_workers, self.tracker, self.description = num_workers, tracker, description
        channels_last = channels_last or cfg.channels_last
        self.channels_last, self.progress = channels_last, progress
        self.pretrained = None if pretrained in (None, "", "none") else pretrained
        self.ocfg = objective or objective_config(cfg)
        self.log_every = log_every or max(1, cfg.steps // 500)
        # Guidance (docs/guidance.md): the training-time network (seg_branch's head; pac's frozen DeepLab from
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
        self.resumer = Resumer(resume_name, key, resume_root) if resume_name and resume_root is not None else None
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
        self.optimizer = torch.optim.Adam(params, lr=lr, fused=True if self.cfg.fused_adam else None)
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
    def _state(self) -> dict:
        """This trainer's part of a resume checkpoint (the loop adds step, RNG state and loss rows)."""
        return {"phase": self.phase, "depth": self.depth_net.state_dict(), "pose": self.pose_net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def _load(self, state: dict) -> None:
        self.depth_net.load_state_dict(state["depth"])
        self.pose_net.load_state_dict(state["pose"])
        self._set_phase(int(state["phase"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    # ------------------------------------------------------------------ loop
    def _forward(self, step: int, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one step and its terms (entering phase 2 first when it starts at `step`)."""
        if self.phase_of(step) != self.phase:
            self._set_phase(self.phase_of(step))
            if self.rank == 0:
                log.info("%s: phase %d from step %d", self.description, self.phase, step)
        batch = to_device(batch, self.device, self.channels_last)
        losses = step_losses(self._depth, self._pose, batch, self.ocfg, self.fdist if self.phase == 2 else None,
                             self.amp_dtype, source_offsets=self.cfg.source_offsets, pose_scale=self.cfg.pose_scale)
        loss = losses["loss"]
        return loss, {"loss": float(loss.detach()), **{k: float(v) for k, v in losses.items() if k != "loss"}}

    def _update(self, step: int, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def train(self, interrupt_at: int | None = None,
              on_step: Callable[[int, dict[str, float]], bool | None] | None = None) -> TrainResult:
        """Run (or finish) `cfg.steps` steps; the nets (`self.depth_net`, `self.pose_net`) are trained
        in place and left in eval mode. `interrupt_at` raises KeyboardInterrupt after that step (tests
        simulate a kill with it).

        `on_step(done, losses)` is called after each optimizer step with the number of steps done and
        that step's loss terms, so a caller can evaluate `self.depth_net` mid-run (the convergence
        benchmark) without a second training loop; the trainer restores its train/eval modes after it.
        Returning True stops after this step (wall-clock budgets): the result then reports `done` steps."""
        cfg = self.cfg
        loss_log = LossLog(self.log_every)
        checkpoints = loop.Checkpoints(self.resumer, cfg.checkpoint_every, self._state, self._load,
                                       at_end=True, barrier=True)
        start = loop.resume(checkpoints, loss_log, self.description)
        if start == 0:  # nothing to resume (checkpoints are saved after a step, never at 0)
            self._set_phase(self.phase_of(0))
        loader = triplet_loader(self.dataset, cfg.batch_size, self.seed, start, self.num_workers, self.rank,
                                self.world, pin_memory=self.device.type == "cuda")

        def after_step(done: int, losses: dict[str, float]) -> bool:
            stop = on_step(done, losses)
            self._train_mode()  # the callback may have switched the nets to eval
            return bool(stop)

        result = loop.train_steps(self._forward, self._update, loader, start=start, steps=cfg.steps,
                                  name=self.description, loss_log=loss_log, checkpoints=checkpoints,
                                  tracker=self.tracker, show=("loss", "t_z"), progress=self.progress,
                                  interrupt_at=interrupt_at,
                                  on_step=after_step if on_step is not None else None)
        self.depth_net.eval()
        self.pose_net.eval()
        return result

    def finish(self) -> None:
        """Drop the resume checkpoint (call after the stage's outputs are written)."""
        if self.resumer and self.rank == 0:
            self.resumer.done()
