"""Photometric error, SSIM, smoothness, minimum reprojection with auto-masking, feature distance."""
from __future__ import annotations

import torch

from semdepth.losses.feature_distance import FeatureDistance, feature_distance
from semdepth.losses.photometric import C1, photometric_error, ssim
from semdepth.losses.reprojection import ObjectiveConfig, identity_errors, self_supervised_loss
from semdepth.losses.smoothness import smoothness_loss
from semdepth.models.encoder import ResnetEncoder

torch.set_num_threads(1)


def _setup(b=2, h=32, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[40.0, 0, (w - 1) / 2], [0, 40.0, (h - 1) / 2], [0, 0, 1]]).expand(b, 3, 3)
    disps = {s: torch.rand(b, 1, h >> s, w >> s, generator=g) for s in range(4)}
    return g, K, torch.linalg.inv(K), disps


def test_ssim_identical_is_one_and_loss_zero():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones_like(x), atol=1e-4)
    assert photometric_error(x, x).abs().max() < 1e-4


def test_ssim_of_constant_images_matches_formula():
    a, b = 0.3, 0.7
    s = ssim(torch.full((1, 3, 8, 8), a), torch.full((1, 3, 8, 8), b))
    expected = (2 * a * b + C1) / (a * a + b * b + C1)  # zero variances: only the luminance term is left
    assert torch.allclose(s, torch.full_like(s, expected), atol=5e-4)  # float32 variances: ~1e-7 vs C2
    pe = photometric_error(torch.full((1, 3, 8, 8), a), torch.full((1, 3, 8, 8), b))
    assert torch.allclose(pe, torch.full_like(pe, 0.85 * (1 - expected) / 2 + 0.15 * (b - a)), atol=5e-4)


def test_smoothness_is_zero_for_constant_and_scale_invariant():
    img = torch.rand(1, 3, 16, 16)
    assert smoothness_loss(torch.full((1, 1, 16, 16), 0.3), img) == 0
    d = torch.rand(1, 1, 16, 16)
    assert torch.allclose(smoothness_loss(d, img), smoothness_loss(3 * d, img), atol=1e-6)
    # edges in the image lower the penalty of disparity edges there
    flat = torch.zeros(1, 3, 16, 16)
    edge = flat.clone()
    edge[..., 8:] = 1.0
    step = torch.ones(1, 1, 16, 16)
    step[..., 8:] = 2.0
    assert smoothness_loss(step, edge) < smoothness_loss(step, flat)


def test_automask_picks_identity_on_a_static_pair():
    g, K, inv_K, disps = _setup()
    tgt = torch.rand(2, 3, 32, 64, generator=g)
    T = torch.eye(4).repeat(2, 1, 1)
    T[:, 0, 3] = 0.3  # a (wrong) sideways motion: the static sources match only unwarped
    out = self_supervised_loss(disps, tgt, [tgt.clone(), tgt.clone()], [T, T], K, inv_K)
    assert out["automask"] > 0.95
    assert out["photometric"] < 1e-4  # the identity errors are ~0 (noise 1e-5)
    off = self_supervised_loss(disps, tgt, [tgt.clone(), tgt.clone()], [T, T], K, inv_K,
                               ObjectiveConfig(automask=False))
    assert off["photometric"] > 0.05


def test_identity_errors_once_equals_per_scale_and_batched_equals_loop():
    g, K, inv_K, disps = _setup(seed=1)
    tgt, s1, s2 = (torch.rand(2, 3, 32, 64, generator=g) for _ in range(3))
    T = torch.eye(4).repeat(2, 1, 1)
    T[:, 2, 3] = -0.2
    ref = self_supervised_loss(disps, tgt, [s1, s2], [T, T.inverse()], K, inv_K)
    for cfg in (ObjectiveConfig(identity_once=False), ObjectiveConfig(batched=False),
                ObjectiveConfig(identity_once=False, batched=False)):
        other = self_supervised_loss(disps, tgt, [s1, s2], [T, T.inverse()], K, inv_K, cfg)
        assert torch.allclose(other["loss"], ref["loss"], atol=1e-4)  # differences: 1e-5 noise only


def test_identity_errors_shape_and_noise():
    tgt = torch.rand(3, 3, 8, 8)
    e = identity_errors(tgt, [tgt, torch.zeros_like(tgt)])
    assert e.shape == (3, 2, 8, 8)
    assert e[:, 0].abs().max() < 1e-4 and e[:, 1].min() > 0.01
    assert identity_errors(tgt, [tgt], noise=False).abs().max() < 1e-5


def test_loss_prefers_the_true_depth():
    """With a known forward motion, the true constant depth scores lower than a wrong one."""
    import torch.nn.functional as F

    b, h, w = 1, 32, 64
    K = torch.tensor([[[40.0, 0, (w - 1) / 2], [0, 40.0, (h - 1) / 2], [0, 0, 1]]])
    g = torch.Generator().manual_seed(3)
    src = F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear")
    # target = source seen from 0.5 m behind on a fronto-parallel plane at 5 m (in the source camera)
    from semdepth.geometry import warp

    T = torch.eye(4)[None].clone()
    T[0, 2, 3] = -0.5  # target -> source: points get 0.5 m closer
    true_depth = 5.5
    tgt = warp(src, torch.full((1, 1, h, w), true_depth), K, T)

    def loss_at(depth: float) -> float:
        disp_val = (1 / depth - 1 / 100) / (1 / 0.1 - 1 / 100)
        d = {s: torch.full((b, 1, h >> s, w >> s), disp_val) for s in range(4)}
        return float(self_supervised_loss(d, tgt, [src], [T], K, torch.linalg.inv(K),
                                          ObjectiveConfig(automask=False))["photometric"])

    assert loss_at(true_depth) < 0.5 * loss_at(2.0)
    assert loss_at(true_depth) < 0.5 * loss_at(40.0)


def test_feature_distance_zero_for_frozen_copy_then_positive():
    torch.manual_seed(0)
    enc = ResnetEncoder(18)
    fd = FeatureDistance(enc, weight=0.5)
    x = torch.rand(2, 3, 64, 64)
    enc.eval()
    with torch.no_grad():
        assert float(fd(x, enc(x)[-1])) == 0.0
        enc.layer4[0].conv1.weight.mul_(1.5)
        assert float(fd(x, enc(x)[-1])) > 0
    assert all(not p.requires_grad for p in fd.reference.parameters())
    a, b = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    b[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0, 0])  # one pixel at distance 5 of four
    assert float(feature_distance(a, b)) == 1.25
