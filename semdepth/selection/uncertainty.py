"""Student-teacher depth difficulty E_j (Hoyer §5).

E_j = mean |log(1 + d_student) - log(1 + d_teacher)| over the valid pixels of frame j, with both
disparities in the teacher's per-image normalised scale (features.normalise_disparity).

Ignored pixels:
- far pixels, teacher disparity < 0.07, dilated: sky and far background where a monocular teacher
  is unreliable (Hoyer: "mask out cars moving in front with very small disparity"); the dilation
  also removes the unstable borders of those regions. Hoyer used a 7x7 kernel at 1024 px width;
  `dilation_kernel` scales it with the image width.
- the ego-vehicle hood rows at the bottom (data.hood_fraction; Hoyer hard-coded 13%).

Hoyer averaged the zero-filled map over *all* pixels, which makes a frame with much sky look easy
just because most of it was masked; we average over the valid pixels only.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from semdepth.selection.features import to_float

FAR_DISPARITY = 0.07
REFERENCE_WIDTH, REFERENCE_KERNEL = 1024, 7


def dilation_kernel(width: int) -> int:
    """Odd dilation kernel size scaled from Hoyer's 7x7 at 1024 px width (at least 1)."""
    half = int(round((REFERENCE_KERNEL // 2) * width / REFERENCE_WIDTH))
    return 2 * half + 1


def hood_start_row(height: int, hood_fraction: float) -> int:
    """First row of the ego-vehicle hood (rows at and below it are ignored)."""
    return height - int(round(height * hood_fraction))


def valid_mask(teacher_disp: torch.Tensor, hood_fraction: float, kernel: int | None = None) -> torch.Tensor:
    """Bool [B, 1, H, W]: True where E_j counts (not far after dilation, not in the hood rows)."""
    kernel = dilation_kernel(teacher_disp.shape[-1]) if kernel is None else kernel
    far = (teacher_disp < FAR_DISPARITY).float()
    if kernel > 1:
        far = F.max_pool2d(far, kernel, stride=1, padding=kernel // 2)
    valid = far < 0.5
    valid[..., hood_start_row(teacher_disp.shape[-2], hood_fraction):, :] = False
    return valid


def depth_error(student_disp: torch.Tensor, teacher_disp: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image mean |log1p(student) - log1p(teacher)| over `valid` pixels: [B] (0 with no valid pixel)."""
    err = (torch.log1p(student_disp.float()) - torch.log1p(teacher_disp.float())).abs() * valid
    count = valid.flatten(1).sum(dim=1)
    return err.flatten(1).sum(dim=1) / count.clamp_min(1)


@torch.no_grad()
def pool_errors(student: torch.nn.Module, images_u8: torch.Tensor, teacher_disp: torch.Tensor,
                hood_fraction: float, batch_size: int, device: torch.device | str) -> np.ndarray:
    """E_j for every pool frame with the student in eval mode: float64 [N]."""
    student.eval()
    out = []
    for s in range(0, images_u8.shape[0], batch_size):
        t = teacher_disp[s:s + batch_size].to(device).float()
        pred = student(to_float(images_u8[s:s + batch_size], device))
        out.append(depth_error(pred, t, valid_mask(t, hood_fraction)).cpu())
    return torch.cat(out).double().numpy()
