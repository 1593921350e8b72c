"""Reading checkpoints and checking state dicts, shared by every model loader.

All loads use `weights_only=True` (no pickled code runs), and every failure is one line naming the
file, so a user handing in the wrong file learns which file and why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from semdepth import SemdepthError


def load_file(path: str | Path, missing_hint: str = "checkpoint file not found") -> object:
    """torch.load(weights_only=True) with one-line errors for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise SemdepthError(f"{path}: {missing_hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise SemdepthError(f"{path}: not a readable torch state dict or checkpoint ({type(e).__name__})") from None


def load_format(path: str | Path, fmt: str, missing_hint: str) -> dict:
    """A checkpoint dict written by this project, checked for its `format` tag."""
    ck = load_file(path, missing_hint)
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        raise SemdepthError(f"{path}: not a {fmt} checkpoint")
    return ck


def state_dict_problems(given: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                        show: int = 3) -> list[str]:
    """Missing, unexpected and shape-mismatched keys, summarised ([] if the dicts match)."""
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    mismatched = [f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
        if keys:
            more = f" (+{len(keys) - show} more)" if len(keys) > show else ""
            problems.append(f"{len(keys)} {what}: {', '.join(keys[:show])}{more}")
    return problems
