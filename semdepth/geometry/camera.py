"""Pinhole camera maths in the project's conventions (docs/contracts.md).

OpenCV axes (x right, y down, z forward); pixel (u, v) = (column, row) with pixel centres at integer
coordinates, so a W-pixel row spans u in [0, W-1]. `project` returns grid_sample coordinates for
align_corners=True, which maps -1/+1 to the centres of the first/last pixel: that is the
normalisation u_n = 2u/(W-1) - 1 used here. (monodepth2 normalises this way but samples with
torch's align_corners=False default, an error of up to half a pixel; docs/method.md §9.)
"""
from __future__ import annotations

import torch

ALIGN_CORNERS = True


def intrinsics_matrix(fx, fy, cx, cy) -> torch.Tensor:
    """[B,3,3] (or [3,3] for scalars) from per-image intrinsics."""
    fx, fy, cx, cy = (torch.as_tensor(v, dtype=torch.float32) for v in (fx, fy, cx, cy))
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, -2)


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """K after resizing the image by (sx, sy) with pixel-area resampling: u' = (u + 0.5)·s - 0.5."""
    K = K.clone()
    K[..., 0, 0] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def flip_intrinsics(K: torch.Tensor, width: int) -> torch.Tensor:
    """K of the horizontally mirrored image: u' = W-1-u, so cx' = W-1-cx (fx keeps its sign because
    the flipped image is treated as a real camera image; the scene is mirrored, not the camera)."""
    K = K.clone()
    K[..., 0, 2] = (width - 1) - K[..., 0, 2]
    return K


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates [3, H*W]: rows u, v, 1 (row-major over the image)."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width, device=device, dtype=dtype)])


def backproject(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """depth [B,1,H,W], inv_K [B,3,3] (or [B,4,4]) -> camera points [B,3,H*W]."""
    b, _, h, w = depth.shape
    pix = pixel_grid(h, w, depth.device, depth.dtype)
    rays = inv_K[:, :3, :3].to(depth.dtype) @ pix
    return rays * depth.reshape(b, 1, h * w)


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor | None, height: int, width: int,
            eps: float = 1e-7) -> torch.Tensor:
    """Camera points [B,3,N] (N = H*W), moved by T [B,4,4] (None = identity) and projected with K
    [B,3,3] -> grid_sample grid [B,H,W,2] in [-1, 1] for align_corners=True."""
    b = points.shape[0]
    if T is not None:
        points = T[:, :3, :3] @ points + T[:, :3, 3:]
    cam = K[:, :3, :3].to(points.dtype) @ points
    z = cam[:, 2:3].clamp(min=eps)
    uv = cam[:, :2] / z
    uv = uv.reshape(b, 2, height, width).permute(0, 2, 3, 1)
    scale = uv.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    return uv * scale - 1.0


def _skew(v: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(v[:, 0])
    return torch.stack([torch.stack([zero, -v[:, 2], v[:, 1]], -1),
                        torch.stack([v[:, 2], zero, -v[:, 0]], -1),
                        torch.stack([-v[:, 1], v[:, 0], zero], -1)], -2)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: R = I + (sinθ/θ)[a]x + ((1-cosθ)/θ²)[a]x², Taylor-expanded near θ = 0 (finite grads)."""
    theta2 = (aa * aa).sum(-1)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    bcoef = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / torch.where(small, 1.0, theta2))
    k = _skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a[:, None, None] * k + bcoef[:, None, None] * (k @ k)


def pose_vec_to_mat(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """[B,3] axis-angle + [B,3] translation -> [B,4,4] [R|t]; invert=True gives [Rᵀ | -Rᵀt]."""
    R = axis_angle_to_matrix(axisangle.reshape(-1, 3))
    t = translation.reshape(-1, 3, 1)
    if invert:
        R = R.transpose(1, 2)
        t = -R @ t
    M = torch.zeros(R.shape[0], 4, 4, dtype=R.dtype, device=R.device)
    M[:, :3, :3] = R
    M[:, :3, 3:] = t
    M[:, 3, 3] = 1.0
    return M


def source_poses(axisangle: torch.Tensor, translation: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose-net outputs [2n,3] for the pairs (t-1, t) then (t, t+1), fed in temporal order in one
    batched call as monodepth2 does -> (T_{t-1<-t}, T_{t+1<-t}) [n,4,4]: target camera to each source.

    The first pair gives T_{t<-t-1}, which is inverted; the second gives T_{t+1<-t} directly.
    """
    T_prev = pose_vec_to_mat(axisangle[:n], translation[:n], invert=True)
    T_next = pose_vec_to_mat(axisangle[n:], translation[n:])
    return T_prev, T_next
