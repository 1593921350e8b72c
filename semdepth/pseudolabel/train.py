"""Supervised DeepLabV3 training on the labelled source domain (`pseudolabel.weights: train`).

SGD with momentum 0.9, poly learning-rate decay (power 0.9, DeepLab's schedule), pixel-wise cross
entropy with 255 ignored (or its class-balanced / OHEM variants, `loss.py`), scale-crop / flip /
colour-jitter augmentation. Frames come from the prepared root, or from the raw root at
`pseudolabel.height/width` (`frames.RawFrames`). Why the sampler is a pure
function of (seed, global sample index) instead of a shuffling DataLoader: results do not depend on
the number of workers, and a resumed run continues with exactly the batches it would have drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from semdepth import SemdepthError
from semdepth.config import PseudolabelConfig
from semdepth.data.frames import read_label, read_label_u8, read_rgb
from semdepth.data.seg_augment import SegAugment
from semdepth.models.deeplab import DeepLab
from semdepth.pseudolabel.frames import RawFrames
from semdepth.pseudolabel.loss import LossFn, make_loss, source_weights
from semdepth.training import loop
from semdepth.training.loop import TrainResult
from semdepth.training.loss_log import LossLog
from semdepth.training.resume import Resumer

MOMENTUM = 0.9
POLY_POWER = 0.9


def _mix(seed: int, *values: int) -> int:
    """A 63-bit generator seed from a run seed and indices (SplitMix-style, no collisions in practice)."""
    x = seed & 0xFFFFFFFFFFFFFFFF
    for v in values:
        x = (x ^ (v + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def read_prepared(image: str | Path, label: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared frame and its train-id label (what `SourceTrainSet` reads by default)."""
    return read_rgb(image), read_label(label)


class SourceTrainSet(Dataset):
    """Sample j is the augmented frame at global position `start + j` of an endless stream that
    visits every frame once per epoch in a seeded random order."""

    def __init__(self, images: Sequence[str | Path], labels: Sequence[str | Path], total: int, seed: int,
                 augment: SegAugment, crop: tuple[int, int], start: int = 0,
                 read: Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        if len(images) != len(labels) or not images:
            raise ValueError("need the same positive number of images and labels")
        self.images, self.labels = list(images), list(labels)
        self.read = read or read_prepared
        self.total, self.seed, self.augment, self.crop, self.start = total, seed, augment, crop, start
        self._perms: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def frame_at(self, i: int) -> int:
        n = len(self.images)
        epoch, pos = divmod(i, n)
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(_mix(self.seed, 1, epoch))
            self._perms = {epoch: torch.randperm(n, generator=g).tolist()}  # one epoch cached at a time
        return self._perms[epoch][pos]

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.start + j
        k = self.frame_at(i)
        gen = torch.Generator().manual_seed(_mix(self.seed, 2, i))
        return self.augment(*self.read(self.images[k], self.labels[k]), self.crop, gen)


def _fast_batchnorm(model: torch.nn.Module, momentum: float = 0.1) -> None:
    """Raise BatchNorm momentum to at least `momentum`. torchvision's MobileNetV3 uses 0.01, tuned for
    ~100k iterations: after a few hundred steps its running statistics would still be close to their
    initial values (mean 0, var 1) and the network collapses in eval mode (measured: val mIoU 0.03
    after 100 steps on SynthCity). No effect on the ResNets (already 0.1)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.momentum is not None:
            m.momentum = max(m.momentum, momentum)


def poly_lr(base: float, step: int, steps: int) -> float:
    return base * (1.0 - step / steps) ** POLY_POWER


def training_loss(cfg: PseudolabelConfig, labels: Sequence[str | Path], frames: RawFrames | None) -> LossFn:
    """`cfg.loss`; the balanced weights count the source labels at the size the network trains on."""
    if cfg.loss != "balanced":
        return make_loss(cfg.loss, ohem_keep=cfg.ohem_keep)
    read = frames.label_u8 if frames is not None else read_label_u8
    return make_loss("balanced", weights=source_weights([Path(p) for p in labels], read))


def train_deeplab(model: DeepLab, images: Sequence[str | Path], labels: Sequence[str | Path],
                  cfg: PseudolabelConfig, crop: tuple[int, int], *, seed: int, device: torch.device,
                  num_workers: int = 0, tracker: Any = None, resumer: Resumer | None = None,
                  checkpoint_every: int = 100, log_every: int | None = None,
                  frames: RawFrames | None = None) -> TrainResult:
    """Train `model` in place for `cfg.steps` steps; returns the loss curve and timing. With `frames`,
    `images`/`labels` are raw files read at `frames.hw` (= `crop`)."""
    if model.num_classes != 19:
        raise SemdepthError(f"pseudolabel: training needs a 19-class model, got {model.num_classes}")
    if cfg.batch_size < 2:
        raise SemdepthError("pseudolabel.batch_size: must be at least 2 for training "
                            "(BatchNorm in DeepLabV3's image-pooling branch needs more than one sample)")
    if cfg.scale_min > cfg.scale_max:
        raise SemdepthError(f"pseudolabel.scale_min: {cfg.scale_min} is larger than scale_max {cfg.scale_max}")
    model.to(device).train()
    _fast_batchnorm(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=MOMENTUM, weight_decay=cfg.weight_decay)
    log = LossLog(every=log_every or max(1, cfg.steps // 300))

    def load(state: dict) -> None:
        model.net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])

    checkpoints = loop.Checkpoints(resumer, checkpoint_every,
                                   lambda: {"model": model.net.state_dict(), "optimizer": opt.state_dict()}, load)
    start = loop.resume(checkpoints, log, "pseudolabel train")
    augment = SegAugment(cfg.scale_min, cfg.scale_max, cfg.color_jitter)
    data = SourceTrainSet(images, labels, cfg.steps * cfg.batch_size, seed, augment, crop,
                          start=start * cfg.batch_size, read=None if frames is None else frames.pair)
    loss_fn = training_loss(cfg, labels, frames)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", drop_last=True,
                        generator=torch.Generator().manual_seed(seed),
                        persistent_workers=False)
    amp = device.type == "cuda" or cfg.cpu_bf16

    def forward(i: int, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        for g in opt.param_groups:
            g["lr"] = poly_lr(cfg.lr, i, cfg.steps)
        x, y = (t.to(device, non_blocking=True) for t in batch)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        return loss, {"loss": float(loss.detach())}

    def update(i: int, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    result = loop.train_steps(forward, update, loader, start=start, steps=cfg.steps, name="pseudolabel train",
                              loss_log=log, checkpoints=checkpoints, tracker=tracker)
    model.eval()
    return result
