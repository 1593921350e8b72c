"""DistributedDataParallel under torchrun (gloo on CPU, NCCL on GPU).

`cli.py` relaunches training stages under `torch.distributed.run` when compute.nproc > 1; the stage
then calls `init()` and wraps its model. Without torchrun everything is a no-op (world size 1).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init(device: torch.device) -> torch.device:
    """Initialise the process group if under torchrun; returns this rank's device."""
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if world()[1] > 1:
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module itself, whether or not `wrap` put it inside DistributedDataParallel: the one place
    that knows how the wrapper holds it (saving, attribute access and state dicts go through here)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
