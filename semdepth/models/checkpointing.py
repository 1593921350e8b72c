"""Activation checkpointing for the depth and segmentation networks (`compute.checkpointing`).

Why: at Hoyer et al.'s scale (ResNet-101, 512x512 crops, batch 4) the activations, not the weights,
fill the GPU; his users ran out of memory at batch 2 on 11 GB cards. With checkpointing on, the
encoder stages (layer1..layer4) and the U-Net decoder levels keep only their inputs in the forward
pass and are recomputed in the backward pass: more compute, much less memory, the same result.

The same result needs two precautions, both handled here:
- BatchNorm in train mode updates its running statistics in every forward, so a plain recomputation
  would update them twice. The recomputation runs with momentum 0 and the batch counters restored
  (`_bn_stats_frozen`): the forward pass alone moves the statistics, exactly as without checkpointing.
- Random ops are replayed with the same RNG state (torch's `preserve_rng_state`, on by default).

Checkpointing applies only while gradients are being recorded for something in the segment; in
`torch.no_grad()` (evaluation, the mean teacher, frozen references) the modules run as usual.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]


@contextlib.contextmanager
def _bn_stats_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics of `module` unchanged inside (the recomputation's forward)."""
    bns = _batch_norms(module)
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _needs_grad(module: nn.Module, inputs: tuple) -> bool:
    if not torch.is_grad_enabled():
        return False
    if any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
        return True
    return any(p.requires_grad for p in module.parameters())


def run(module: nn.Module, *inputs: torch.Tensor, fn: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """`fn(*inputs)` (default: `module(*inputs)`) with its activations recomputed in the backward pass.

    `module` owns every parameter and BatchNorm that `fn` uses (its BatchNorm statistics are protected
    during the recomputation)."""
    call = fn if fn is not None else module
    if not _needs_grad(module, inputs):
        return call(*inputs)
    return checkpoint(call, *inputs, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _bn_stats_frozen(module)))


def set_checkpointing(model: nn.Module, enabled: bool) -> int:
    """Switch checkpointing on or off in every encoder and U-Net decoder inside `model` (a depth net,
    a segmenter, a pose net); returns how many modules were switched."""
    from semdepth.models.depth_decoder import UNetDecoder
    from semdepth.models.encoder import ResnetEncoder

    n = 0
    for m in model.modules():
        if isinstance(m, (ResnetEncoder, UNetDecoder)):
            m.checkpointing = bool(enabled)
            n += 1
    return n
