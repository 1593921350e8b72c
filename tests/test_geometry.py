"""Camera geometry: projection round trip, pose parametrisation, intrinsics helpers, warping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _sde_scene import T_src_tgt, intrinsics, render
from semdepth.geometry import (backproject, flip_intrinsics, pixel_grid, pose_vec_to_mat, project,
                               scale_intrinsics, warp)
from semdepth.geometry.camera import axis_angle_to_matrix, source_poses
from semdepth.geometry.depth import disp_to_depth
from semdepth.losses.photometric import photometric_error

torch.set_num_threads(1)


def _K(h: int, w: int) -> torch.Tensor:
    return torch.tensor(intrinsics(h, w), dtype=torch.float32)[None]


def test_backproject_then_project_returns_pixel_grid():
    h, w = 12, 20
    K = torch.tensor([[[17.0, 0, 9.3], [0, 15.0, 5.1], [0, 0, 1]]])
    depth = torch.rand(1, 1, h, w) * 50 + 0.5
    grid = project(backproject(depth, torch.linalg.inv(K)), K, None, h, w)
    u = (grid[..., 0] + 1) * (w - 1) / 2
    v = (grid[..., 1] + 1) * (h - 1) / 2
    vv, uu = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    assert torch.allclose(u[0], uu, atol=1e-3) and torch.allclose(v[0], vv, atol=1e-3)
    pix = pixel_grid(h, w)
    assert pix.shape == (3, h * w) and pix[0, 1] == 1 and pix[1, w] == 1


def test_identity_warp_reproduces_image_exactly():
    """grid normalisation and grid_sample's align_corners agree: a zero motion samples pixel centres."""
    img = torch.rand(2, 3, 16, 24)
    K = _K(16, 24).expand(2, 3, 3)
    out = warp(img, torch.full((2, 1, 16, 24), 7.0), K, torch.eye(4).expand(2, 4, 4))
    assert torch.allclose(out, img, atol=1e-5)


def test_integer_shift_is_exact_and_has_the_right_direction():
    """A lateral camera move by depth*k/fx pixels shifts the sampled image by exactly k columns."""
    h, w, depth = 8, 16, 10.0
    K = _K(h, w)
    img = torch.rand(1, 3, h, w)
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = -2 * depth / K[0, 0, 0]  # source camera 2 px worth to the right: points move left by 2 px... in x_src = x - shift
    out = warp(img, torch.full((1, 1, h, w), depth), K, T)
    # u_src = u - 2: target pixel u sees source pixel u-2
    assert torch.allclose(out[..., 2:], img[..., :-2], atol=1e-5)


def test_rodrigues_matches_known_rotations_and_inverse():
    aa = torch.tensor([[0.0, 0.0, np.pi / 2], [1e-9, 0, 0], [0.3, -0.2, 0.5]])
    R = axis_angle_to_matrix(aa)
    assert torch.allclose(R[0], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)
    assert torch.allclose(R[1], torch.eye(3), atol=1e-6)
    assert torch.allclose(R[2] @ R[2].T, torch.eye(3), atol=1e-6)
    assert torch.allclose(torch.det(R[2]), torch.tensor(1.0), atol=1e-6)
    t = torch.tensor([[0.1, 0.2, -0.3]] * 3)
    M, Minv = pose_vec_to_mat(aa, t), pose_vec_to_mat(aa, t, invert=True)
    assert torch.allclose(M @ Minv, torch.eye(4).expand(3, 4, 4), atol=1e-6)
    aa0 = torch.zeros(1, 3, requires_grad=True)
    pose_vec_to_mat(aa0, torch.zeros(1, 3)).sum().backward()
    assert torch.isfinite(aa0.grad).all()


def test_source_poses_are_the_two_pair_poses():
    """Both trainers get (T_{t-1<-t}, T_{t+1<-t}) from one batched pose call: the first half inverted."""
    g = torch.Generator().manual_seed(0)
    aa, t = torch.randn(6, 3, generator=g) * 0.1, torch.randn(6, 3, generator=g)
    T_prev, T_next = source_poses(aa, t, 3)
    assert torch.equal(T_prev, pose_vec_to_mat(aa[:3], t[:3], invert=True))
    assert torch.equal(T_next, pose_vec_to_mat(aa[3:], t[3:]))
    assert T_prev.shape == T_next.shape == (3, 4, 4)


def test_disp_to_depth_spans_the_depth_range():
    scaled, depth = disp_to_depth(torch.tensor([0.0, 0.5, 1.0]), 0.1, 100.0)
    assert torch.allclose(depth[[0, 2]], torch.tensor([100.0, 0.1]))
    assert torch.allclose(scaled * depth, torch.ones(3))
    assert bool((depth[:-1] > depth[1:]).all())


def test_intrinsics_helpers():
    K = torch.tensor([[100.0, 0, 63.5], [0, 100, 31.5], [0, 0, 1]])
    half = scale_intrinsics(K, 0.5, 0.5)
    assert torch.allclose(half, torch.tensor([[50.0, 0, 31.5], [0, 50, 15.5], [0, 0, 1]]))  # centre stays centre
    f = flip_intrinsics(torch.tensor([[100.0, 0, 60.0], [0, 100, 30], [0, 0, 1]]), 128)
    assert f[0, 2] == 67.0 and f[1, 2] == 30.0


def test_flip_intrinsics_consistent_with_flipped_projection():
    """Projecting a mirrored scene with flipped K lands on the mirrored pixel."""
    w, h = 128, 64
    K = torch.tensor([[[90.0, 0, 60.2], [0, 90, 30.0], [0, 0, 1]]])
    P = torch.tensor([[[1.3], [0.4], [7.0]]])
    g = project(P.expand(1, 3, 1).repeat(1, 1, h * w), K, None, h, w)[0, 0, 0]
    Pm = P.clone()
    Pm[0, 0] *= -1
    gm = project(Pm.repeat(1, 1, h * w), flip_intrinsics(K, w), None, h, w)[0, 0, 0]
    u, um = (g[0] + 1) * (w - 1) / 2, (gm[0] + 1) * (w - 1) / 2
    assert torch.allclose(um, (w - 1) - u, atol=1e-4)


def test_warp_with_true_depth_and_pose_beats_identity():
    h, w = 64, 128
    tgt, depth = render(h, w, 0.0)
    src, _ = render(h, w, 0.8)  # next frame, 0.8 m ahead
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    T = torch.tensor(T_src_tgt(0.8, 0.0), dtype=torch.float32)[None]
    warped = warp(to_t(src), torch.from_numpy(depth)[None, None], _K(h, w), T)
    ident = photometric_error(to_t(src), to_t(tgt)).mean()
    err = photometric_error(warped, to_t(tgt)).mean()
    assert err < 0.35 * ident, (float(err), float(ident))
    # the sign matters: the opposite motion is worse than the true one
    wrong = warp(to_t(src), torch.from_numpy(depth)[None, None], _K(h, w), torch.linalg.inv(T))
    assert photometric_error(wrong, to_t(tgt)).mean() > 2 * err
