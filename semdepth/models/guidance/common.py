"""Pieces shared by the guidance options: the foreground target, the BCE term, the SEEM point count."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from semdepth import SemdepthError

FOREGROUND = "foreground"  # batch key: binary pseudo-label [B,1,H,W] float 0/1 (pseudolabels.parquet)
SEEM_REFERENCE_AREA = 640 * 192  # sde.seem_points is given at the SEEM paper's resolution


def foreground_target(batch: Mapping[str, Any] | None, size: tuple[int, int], required: bool = True
                      ) -> torch.Tensor | None:
    """The batch's binary foreground map as float [B,1,h,w] at `size` (nearest), or None.

    Nearest resizing keeps the map binary, so the BCE target and the SEEM edge sampler see hard edges.
    """
    fg = None if batch is None else batch.get(FOREGROUND)
    if fg is None:
        if required:
            raise SemdepthError("guidance: the batch has no 'foreground' map (the trainer must load the binary "
                                "pseudo-labels of data/pseudolabels for sde.guidance seg_branch/seem)")
        return None
    fg = fg.float()
    if fg.dim() == 3:
        fg = fg.unsqueeze(1)
    if tuple(fg.shape[-2:]) != tuple(size):
        fg = F.interpolate(fg, size=size, mode="nearest")
    return fg


def foreground_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of foreground logits [B,1,H,W] against a 0/1 map of the same size."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.binary_cross_entropy_with_logits(logits, target)


def seem_point_count(points_at_reference: int, height: int, width: int) -> int:
    """sde.seem_points is the count at 640x192; scale it with the image area (at least 1)."""
    return max(1, int(round(points_at_reference * height * width / SEEM_REFERENCE_AREA)))
