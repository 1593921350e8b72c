"""One optimisation step of semi-supervised segmentation (Hoyer et al. 2021; docs/method.md §7).

Per step:
1. supervised cross-entropy on the labelled batch (never mixed);
2. if `mix != none`: the mean teacher predicts the clean mixing batch; targets are one-hot ground
   truth for labelled frames and teacher probabilities otherwise; DepthMix (or ClassMix) blends pairs
   (k, perm[k]) of images and targets with one mask; the student sees the mixed images after colour
   jitter and blur and is trained on the argmax of the mixed targets, weighted by the fraction of
   confident pixels;
3. multi-task: the self-supervised depth loss on every frame of the labelled and clean mixing batches
   that has both temporal neighbours (Hoyer applies it to both batches), weight `depth_weight`.

All student inputs go through *one* forward call (labelled, clean mixing, mixed), so DDP sees a single
forward per backward and the batch is as large as possible.

DepthMix's disparity: the frozen stage-2 SDE in single-task mode (Hoyer exp 210 used precomputed SDE
disparity); in multi-task mode the network's own depth branch (Hoyer exp 212), taken from the teacher's
forward pass on the clean images, which has to run anyway for the pseudo-labels. The teacher is the
EMA of the student, so this is the student's current depth, smoothed, for no extra forward pass.

`mix: none` means no unsupervised term at all (Hoyer's "transfer" baseline): supervised loss, plus the
depth loss in multi-task mode.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from semdepth.geometry.camera import source_poses
from semdepth.losses.reprojection import ObjectiveConfig, self_supervised_loss
from semdepth.mixing.augment import strong_augment
from semdepth.mixing.classmix import classmix
from semdepth.mixing.common import IGNORE, derangement, make_targets, targets_to_labels
from semdepth.mixing.depthmix import depthmix
from semdepth.training import ddp
from semdepth.training.mean_teacher import confidence_weight

GRAD_CLIP = 10.0  # Hoyer's gradient-norm clip


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.SGD:
    """SGD with momentum and weight decay; groups: encoder (lr_encoder), decoders and heads
    (lr_decoder). The frozen pose net is left out. Each group remembers its base lr for the schedule."""
    groups = [{"params": list(model.encoder.parameters()), "lr": cfg.lr_encoder, "base_lr": cfg.lr_encoder,
               "name": "encoder"},
              {"params": model.decoder_parameters(), "lr": cfg.lr_decoder, "base_lr": cfg.lr_decoder,
               "name": "decoder"}]
    return torch.optim.SGD(groups, lr=cfg.lr_decoder, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps: int, decay_at: float) -> float:
    """x0.1 from step ⌊decay_at·steps⌋ on (Hoyer: 30k of 40k)."""
    return 0.1 if step >= int(decay_at * steps) else 1.0


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def seg_ce(out: dict, labels: torch.Tensor, rows: slice) -> torch.Tensor:
    """Cross-entropy (ignore 255) of the rows' logits; with a side head, the mean of both losses."""
    logits = out["logits"][rows]
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    if "side_logits" in out:
        side = F.interpolate(out["side_logits"][rows], size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = 0.5 * (loss + F.cross_entropy(side, labels, ignore_index=IGNORE))
    return loss


class FinetuneStep:
    """Computes the step's total loss and its parts; holds what does not change between steps."""

    def __init__(self, cfg: Any, depth_cfg: ObjectiveConfig, sde_net: nn.Module | None = None) -> None:
        self.cfg = cfg
        self.depth_cfg = depth_cfg
        self.sde_net = sde_net  # frozen SDE for single-task DepthMix

    @torch.no_grad()
    def _targets(self, teacher: nn.Module, b: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        xm = b["m_image"]
        need_disp = cfg.mix == "depthmix"
        tout = teacher(xm, with_depth=need_disp and teacher.multitask)
        probs = torch.softmax(tout["logits"].float(), 1)
        targets, valid = make_targets(probs, b["m_label"], b["m_labelled"])
        perm = derangement(xm.shape[0], gen, xm.device)
        if cfg.mix == "depthmix":
            if teacher.multitask:
                disp = tout["disp"][0]
            else:
                if self.sde_net is None:
                    raise ValueError("single-task DepthMix needs the frozen SDE")
                disp = self.sde_net(xm)["disp"][0]
            x, p, v, mask = depthmix(xm, targets, valid, disp, perm)
        else:
            hard = targets_to_labels(targets, valid)
            x, p, v, mask = classmix(xm, targets, valid, hard, perm, gen)
        x = strong_augment(x, gen)  # random draws on the CPU generator, maths on x's device
        return {"x": x, "labels": targets_to_labels(p, v), "weight": confidence_weight(p, cfg.conf_threshold, v),
                "mask_share": mask.float().mean()}

    def __call__(self, student: nn.Module, teacher: nn.Module | None, b: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        multitask = bool(ddp.unwrap(student).multitask)
        gen = torch.Generator().manual_seed(int(b["mix_seed"]))
        xl, yl = b["l_image"], b["l_label"]
        bl = xl.shape[0]
        inputs, parts = [xl], {}
        use_mix = cfg.mix != "none"
        mix = self._targets(teacher, b, gen) if use_mix else None
        # depth rows: labelled and clean mixing frames with both neighbours
        depth_rows: list[int] = []
        target, prev, nxt, K = [], [], [], []
        if multitask:
            inputs.append(b["m_image"])
            for pre, off in (("l_", 0), ("m_", bl)):
                nb = b[f"{pre}has_nb"]
                idx = nb.nonzero().flatten()
                depth_rows += (idx + off).tolist()
                target.append(b[f"{pre}image"][idx])
                prev.append(b[f"{pre}prev"][idx])
                nxt.append(b[f"{pre}next"][idx])
                K.append(b[f"{pre}K"][idx])
        n_clean = sum(x.shape[0] for x in inputs)
        if mix is not None:
            inputs.append(mix["x"])
        pose_inputs = None
        if depth_rows:
            tgt, prv, nx = torch.cat(target), torch.cat(prev), torch.cat(nxt)
            pose_inputs = (torch.cat([prv, tgt]), torch.cat([tgt, nx]))
        out = student(torch.cat(inputs), with_depth=bool(depth_rows), pose_inputs=pose_inputs)

        sup = seg_ce(out, yl, slice(0, bl))
        loss = sup
        parts["sup"] = float(sup.detach())
        if mix is not None:
            raw = seg_ce(out, mix["labels"], slice(n_clean, None))
            unsup = cfg.unsup_weight * mix["weight"] * raw
            loss = loss + unsup
            parts.update(unsup=float(unsup.detach()), unsup_raw=float(raw.detach()),
                         conf_weight=float(mix["weight"]), mix_share=float(mix["mask_share"]))
        if depth_rows:
            rows = torch.tensor(depth_rows, device=xl.device)
            disps = {s: d[rows] for s, d in out["disp"].items()}
            n = rows.numel()
            T_prev, T_next = source_poses(*out["pose"], n)
            Kd = torch.cat(K).to(xl.device)
            dl = self_supervised_loss(disps, tgt, [prv, nx], [T_prev, T_next], Kd, torch.linalg.inv(Kd),
                                      self.depth_cfg)
            loss = loss + cfg.depth_weight * dl["loss"]
            parts.update(depth=float(dl["loss"].detach()), photometric=float(dl["photometric"]),
                         automask=float(dl["automask"]))
        parts["loss"] = float(loss.detach())
        return loss, parts


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Argmax train ids [N,H,W] of images [N,3,H,W] (model in eval mode, segmentation only)."""
    out = []
    for i in range(0, images.shape[0], batch_size):
        out.append(model(images[i:i + batch_size], with_depth=False)["logits"].argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
