"""Semantic guidance for the SDE (docs/guidance.md): PAC, the segmentation branch, SEEM, and their wiring."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from semdepth import SemdepthError
from semdepth.config import SdeConfig
from semdepth.models.depth_decoder import DepthDecoder
from semdepth.models.depth_net import DepthNet
from semdepth.models.encoder import ResnetEncoder
from semdepth.models.guidance.common import foreground_target, seem_point_count
from semdepth.models.guidance.pac import PacConv2d, PacDepthNet, SemanticGuide, pac2d, pac_kernel
from semdepth.models.guidance.seem import (SemanticAttention, sample_edge_points, sample_features, sobel_magnitude,
                                           split_counts, write_points)
from semdepth.models.registry import build_on_encoder
from semdepth.models.sde import build_depth_net, build_pose_net, load_sde, save_sde

H, W = 64, 64  # smallest size the decoder supports (reflection padding needs 2 px at 1/32)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def cfg_for(guidance: str, **kw) -> SdeConfig:
    return dataclasses.replace(SdeConfig(), guidance=guidance, **kw)


def square_mask(h: int = 48, w: int = 64, y0: int = 12, y1: int = 36, x0: int = 20, x1: int = 44) -> torch.Tensor:
    m = torch.zeros(2, 1, h, w)
    m[:, :, y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def pseudolabel_file(tmp_path_factory):
    """A data/models/pseudolabel.pt as the pseudolabel stage writes it (random ResNet-18 DeepLab)."""
    from semdepth.models.deeplab import DeepLab, checkpoint_dict

    torch.manual_seed(3)
    model = DeepLab("deeplabv3_resnet18")
    with torch.no_grad():  # non-trivial BatchNorm statistics, so "frozen" is observable
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("pl") / "pseudolabel.pt"
    torch.save(checkpoint_dict(model), path)
    return path


def synthetic_batch(b: int = 2, seed: int = 0) -> dict:
    """A smooth random scene panning one pixel per frame, with a foreground box."""
    g = torch.Generator().manual_seed(seed)
    big = F.interpolate(torch.rand(b, 3, H // 4, W // 4 + 2, generator=g), size=(H, W + 8), mode="bilinear",
                        align_corners=False)
    frames = {o: big[..., 4 + o: 4 + o + W].contiguous() for o in (-1, 0, 1)}
    K = torch.tensor([[0.6 * W, 0, (W - 1) / 2], [0, 0.6 * W, (H - 1) / 2], [0, 0, 1.0]]).expand(b, 3, 3).clone()
    fg = torch.zeros(b, 1, H, W)
    fg[:, :, 10:24, 20:40] = 1
    batch = {"K": K, "inv_K": torch.linalg.inv(K), "foreground": fg}
    for o, img in frames.items():
        batch[f"color_{o}"] = img
        batch[f"aug_{o}"] = img
    return batch


# ------------------------------------------------------------------------------------------ PAC
@pytest.mark.parametrize("padding_mode", ["reflect", "zeros"])
def test_pac_equals_conv_when_kernel_is_constant(padding_mode):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    guide = torch.full((2, 4, 9, 11), 0.7, dtype=torch.float64)  # constant guide: K = exp(0) = 1 exactly
    pac = PacConv2d(6, 5, 3, padding_mode=padding_mode, guide_channels=4).double()
    pad = (1, 1, 1, 1)
    xp = F.pad(x, pad, mode="reflect") if padding_mode == "reflect" else F.pad(x, pad)
    ref = F.conv2d(xp, pac.weight, pac.bias)
    assert pac_kernel(guide, (3, 3), pac.sigma).eq(1).all()
    torch.testing.assert_close(pac(x, guide), ref, rtol=0, atol=1e-12)
    # float32 and a 5x5 kernel: equal up to summation order
    pac5 = PacConv2d(6, 3, 5, padding_mode=padding_mode)
    x32 = x.float()
    xp5 = F.pad(x32, (2, 2, 2, 2), mode="reflect") if padding_mode == "reflect" else F.pad(x32, (2, 2, 2, 2))
    torch.testing.assert_close(pac5(x32, guide.float()), F.conv2d(xp5, pac5.weight, pac5.bias), rtol=1e-5, atol=1e-5)


def test_pac_from_conv_shares_weights_and_differs_across_edges():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 3)
    pac = PacConv2d.from_conv(conv, guide_channels=1, sigma_init=0.05)
    assert pac.weight is conv.weight and pac.bias is conv.bias
    x = torch.randn(1, 3, 8, 8)
    guide = torch.zeros(1, 1, 8, 8)
    guide[..., 4:] = 1.0  # a vertical semantic edge between columns 3 and 4
    out = pac(x, guide)
    x2 = x.clone()
    x2[..., 4:] += 10.0  # change only the right side
    out2 = pac(x2, guide)
    # with a narrow kernel the left side ignores the right side (K = exp(-1/(2·0.05²)) ~ 0) ...
    torch.testing.assert_close(out[..., :4], out2[..., :4], rtol=0, atol=1e-6)
    # ... which the plain convolution does not
    plain = lambda t: conv(F.pad(t, (1, 1, 1, 1), mode="reflect"))  # noqa: E731
    assert (plain(x)[..., 3] - plain(x2)[..., 3]).abs().max() > 1.0


def test_pac_gradients_and_implementations_agree():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    guide = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    f = lambda x, g, w, b, s: pac2d(x, g, w, b, s.exp())  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, guide, w, b, log_sigma))
    # the fast "shift" implementation and the textbook unfold agree in values and gradients
    grads = []
    for impl in ("shift", "unfold"):
        out = pac2d(x, guide, w, b, log_sigma.exp(), padding_mode="zeros", impl=impl)
        grads.append((out,) + torch.autograd.grad(out.square().sum(), (x, guide, w, b, log_sigma)))
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in grads[0])


def test_pac_rejects_bad_shapes():
    with pytest.raises(ValueError, match="odd"):
        PacConv2d(3, 3, 4)
    pac = PacConv2d(3, 3, 3)
    with pytest.raises(ValueError, match="does not match"):
        pac(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 4, 4))


# ----------------------------------------------------------------------------------------- SEEM
def test_seem_point_counts_scale_with_area():
    assert seem_point_count(3000, 192, 640) == 3000
    assert seem_point_count(3000, 96, 192) == 450
    assert seem_point_count(1, 32, 64) == 1
    assert split_counts(3000) == (1200, 1200, 600)
    assert sum(split_counts(7)) == 7


def test_seem_sampler_square_mask():
    mask = square_mask()
    n = 100
    g = torch.Generator().manual_seed(0)
    pts = sample_edge_points(mask, n, generator=g)
    assert pts.shape == (2, n, 2) and pts.dtype == torch.long
    x, y = pts[..., 0], pts[..., 1]
    assert (x >= 0).all() and (x < mask.shape[-1]).all() and (y >= 0).all() and (y < mask.shape[-2]).all()
    n_edge, n_jit, n_rand = split_counts(n)
    assert (n_edge, n_jit, n_rand) == (40, 40, 20)
    mag = sobel_magnitude(mask)
    for b in range(2):
        edge = pts[b, :n_edge]
        on_edge = mag[b, edge[:, 1], edge[:, 0]]
        assert (on_edge > 0).all()  # the square's perimeter has far more than 40 edge pixels
        # Sobel responds on both sides of the border: within 1 px of a label change
        m = mask[b, 0]
        for px, py in edge.tolist():
            win = m[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2]
            assert win.min() == 0 and win.max() == 1
        jit = pts[b, n_edge:n_edge + n_jit]
        assert (jit - edge).abs().max() <= 3  # jittered copies of the edge points, within ±3 px
        assert (jit != edge).any()
    # ties are broken at random: the edge points spread around the square, not along one side
    assert len(set(pts[0, :n_edge, 1].tolist())) > 10
    # no edges at all (empty mask): still n points inside the image
    empty = sample_edge_points(torch.zeros(1, 1, 16, 16), 30)
    assert empty.shape == (1, 30, 2) and empty.min() >= 0 and empty.max() < 16


def test_sample_and_write_points():
    feat = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    pts = torch.tensor([[[0, 0], [9, 7], [4, 3]], [[1, 2], [1, 2], [5, 5]]])
    got = sample_features(feat, pts, (8, 10))
    want = torch.stack([feat[b, :, pts[b, :, 1], pts[b, :, 0]] for b in range(2)])
    torch.testing.assert_close(got, want)
    # a half-resolution map is sampled bilinearly at the same image locations
    half = F.avg_pool2d(feat, 2)
    assert sample_features(half, pts, (8, 10)).shape == (2, 3, 3)
    values = torch.randn(2, 3, 3, requires_grad=True)
    base = feat.clone().requires_grad_(True)
    out = write_points(base, pts, values)
    torch.testing.assert_close(out[0, :, 3, 4], values[0, :, 2])
    torch.testing.assert_close(out[1, :, 2, 1], values[1, :, :2].mean(-1))  # a repeated point: mean
    changed = (out != feat).any(1)
    assert changed.sum() == 5  # exactly the 5 distinct points
    out.sum().backward()
    assert values.grad.abs().sum() > 0
    assert base.grad[0, :, 3, 4].eq(0).all() and base.grad[0, :, 0, 5].eq(1).all()


def test_semantic_attention_starts_as_fusion():
    torch.manual_seed(0)
    att = SemanticAttention(16, 8)
    d, s = torch.randn(2, 16, 6, 12), torch.randn(2, 8, 6, 12)
    out = att(d, s)
    torch.testing.assert_close(out, att.fuse(torch.cat([d, s], 1)))  # γ = 0 at the start
    out.sum().backward()
    assert att.gamma.grad is not None and att.gamma.grad.abs() > 0
    with torch.no_grad():
        att.gamma.fill_(0.5)
        fa = att.fuse(torch.cat([d, s], 1))
        q, k, v = att.q(fa).flatten(2), att.k(fa).flatten(2), att.v(fa).flatten(2)
        a = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # [B, HW query, HW key]
        want = 0.5 * (v @ a.transpose(1, 2)).view_as(fa) + fa
        torch.testing.assert_close(att(d, s), want, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(want, fa)


# -------------------------------------------------------------------------------- guided networks
def _build(guidance: str, pseudolabel_file=None, **kw) -> DepthNet:
    torch.manual_seed(0)
    enc = ResnetEncoder(18)
    return build_on_encoder(cfg_for(guidance, **kw), enc, training=True,
                            pseudolabel_model=pseudolabel_file if guidance == "pac" else None)


@pytest.mark.parametrize("guidance", ["seg_branch", "pac", "seem", "seem_attention"])
def test_guided_net_shapes_and_gradients(guidance, pseudolabel_file):
    name = "seem" if guidance == "seem_attention" else guidance
    net = _build(name, pseudolabel_file, seem_attention=guidance == "seem_attention", seg_weight=1.0)
    net.train()
    batch = synthetic_batch()
    out = net(batch["aug_0"], batch)
    for s in (0, 1, 2, 3):
        assert out["disp"][s].shape == (2, 1, H >> s, W >> s)
        assert out["disp"][s].min() >= 0 and out["disp"][s].max() <= 1
    aux = net.aux_losses(out, batch)
    assert set(aux) == {"seg_branch": {"seg_bce"}, "pac": set(), "seem": {"sem_bce"}}[name]
    loss = sum(d.mean() for d in out["disp"].values()) + sum(aux.values(), torch.zeros(()))
    loss.backward()
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert not no_grad, no_grad[:5]
    if name == "pac":
        sig = [n for n in trainable if n.endswith("log_sigma")]
        assert len(sig) == 5 and all(trainable[n].grad.abs() > 0 for n in sig)
        assert not any(p.requires_grad for p in net.guide.semantic.parameters())  # DeepLab frozen
    if name == "seem":
        assert out["seem_points"].shape == (2, seem_point_count(3000, H, W), 2)


def test_guidance_none_is_the_plain_network():
    """sde.guidance none builds exactly the plain monodepth2 network (and the trainer's kwargs are ignored)."""
    cfg = cfg_for("none")
    torch.manual_seed(0)
    net = build_depth_net(cfg, None, training=True, pseudolabel_model="does/not/exist.pt")
    torch.manual_seed(0)
    enc = ResnetEncoder(18)
    plain = DepthNet(enc, DepthDecoder(enc.num_ch_enc))
    assert type(net) is DepthNet
    sd, ref = net.state_dict(), plain.state_dict()
    assert list(sd) == list(ref) and all(torch.equal(sd[k], ref[k]) for k in sd)
    batch = synthetic_batch()
    net.train(), plain.train()
    assert net.aux_losses(net(batch["aug_0"], batch), batch) == {}
    torch.testing.assert_close(net(batch["aug_0"])["disp"][0], plain(batch["aug_0"])["disp"][0], rtol=0, atol=0)


def test_registry_has_every_guidance_option():
    """Each `sde.guidance` value the config accepts has a registered network, and no other."""
    import typing

    from semdepth.models import registry

    options = typing.get_args(typing.get_type_hints(SdeConfig)["guidance"])
    assert set(registry.names()) == set(options)
    with pytest.raises(SemdepthError, match="sde.guidance: 'bogus'"):
        build_on_encoder({"guidance": "bogus"}, ResnetEncoder(18))


def test_guidance_modules_do_not_import_the_sde_module():
    """The guided networks subclass DepthNet from depth_net.py: each imports alone, without sde.py."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "semdepth" / "models" / "guidance").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in imported if m.startswith("semdepth.models.sde")}, path.name
    for mod in ("semdepth.models.guidance.pac", "semdepth.models.guidance.seem", "semdepth.models.guidance.seg_branch",
                "semdepth.models.sde"):
        code = f"import sys, {mod}; print('semdepth.models.sde' in sys.modules)"
        res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == str(mod == "semdepth.models.sde"), mod


def test_seg_branch_is_training_only(tmp_path):
    """The saved model has the plain keys and the plain forward; in eval the head never runs."""
    cfg = cfg_for("seg_branch", seg_weight=1.0)
    net = _build("seg_branch")
    torch.manual_seed(0)
    plain = build_on_encoder(cfg, ResnetEncoder(18), training=False)
    assert type(plain) is DepthNet
    # same seed, same construction order: identical depth weights, plus the head
    assert set(net.state_dict()) - set(plain.state_dict()) == {k for k in net.state_dict() if k.startswith("seg_head.")}
    assert set(net.inference_state_dict()) == set(plain.state_dict())
    x = synthetic_batch()["aug_0"]
    net.eval()
    out = net(x)
    assert "seg_logits" not in out
    torch.testing.assert_close(out["disp"][0], plain.eval()(x)["disp"][0], rtol=0, atol=0)
    path = tmp_path / "sde.pt"
    save_sde(path, net, build_pose_net(cfg), dataclasses.asdict(cfg), {})
    ck = torch.load(path, weights_only=True)
    assert set(ck["depth"]) == set(plain.state_dict())
    loaded, _, _ = load_sde(path)
    assert type(loaded) is DepthNet
    torch.testing.assert_close(loaded(x)["disp"][0], out["disp"][0], rtol=0, atol=0)
    # the loss needs the pseudo-labels
    net.train()
    with pytest.raises(SemdepthError, match="foreground"):
        net.aux_losses(net(x), {})


@pytest.mark.parametrize("guidance", ["pac", "seem"])
def test_guided_checkpoint_roundtrip(guidance, pseudolabel_file, tmp_path):
    """pac and seem keep their modules at inference; load_sde rebuilds them (pac's DeepLab from the
    checkpoint itself: no pseudo-label file needed downstream)."""
    cfg = cfg_for(guidance, seem_attention=True)
    net = _build(guidance, pseudolabel_file, seem_attention=True).eval()
    x = synthetic_batch()["aug_0"]
    out = net(x)["disp"][0]
    path = tmp_path / "sde.pt"
    save_sde(path, net, build_pose_net(cfg), dataclasses.asdict(cfg), {})
    loaded, _, _ = load_sde(path)
    assert type(loaded) is type(net)
    torch.testing.assert_close(loaded(x)["disp"][0], out, rtol=0, atol=0)
    if guidance == "seem":  # evaluation samples deterministically (fixed-seed generator)
        torch.testing.assert_close(net(x)["disp"][0], out, rtol=0, atol=0)


def test_pac_uses_the_pseudolabel_deeplab(pseudolabel_file):
    ck = torch.load(pseudolabel_file, weights_only=True)
    net = _build("pac", pseudolabel_file)
    assert isinstance(net, PacDepthNet)
    own = net.guide.semantic.deeplab.net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ck["state_dict"].items())
    with pytest.raises(SemdepthError, match="pseudo-label model"):
        build_on_encoder(cfg_for("pac"), ResnetEncoder(18), training=True)
    with pytest.raises(RuntimeError, match="no DeepLab"):
        SemanticGuide()(torch.zeros(1, 3, H, W))


@pytest.mark.parametrize("guidance", ["none", "seg_branch", "pac", "seem"])
def test_each_option_trains_and_lowers_its_loss(guidance, pseudolabel_file):
    """A few Adam steps on one tiny batch lower the total loss (and the BCE term where there is one);
    pac's DeepLab (weights and BatchNorm statistics) does not move."""
    from semdepth.training.sde_trainer import objective_config, step_losses

    cfg = cfg_for(guidance, seg_weight=1.0, seem_attention=True)
    torch.manual_seed(0)
    depth = build_depth_net(cfg, None, training=True, pseudolabel_model=pseudolabel_file)
    pose = build_pose_net(cfg)
    frozen = ({k: v.clone() for k, v in depth.guide.semantic.state_dict().items()} if guidance == "pac" else None)
    depth.train(), pose.train()
    opt = torch.optim.Adam(list(depth.parameters()) + list(pose.parameters()), lr=1e-3)
    batch = synthetic_batch()
    ocfg = objective_config(cfg)
    history = []
    for _ in range(4):
        torch.manual_seed(1)  # same SEEM points and automask noise every step: a pure descent check
        losses = step_losses(depth, pose, batch, ocfg)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert history[-1]["loss"] < history[0]["loss"], [h["loss"] for h in history]
    bce = {"seg_branch": "seg_bce", "seem": "sem_bce"}.get(guidance)
    if bce:
        assert history[-1][bce] < history[0][bce]
    if frozen is not None:
        now = depth.guide.semantic.state_dict()
        assert all(torch.equal(now[k], v) for k, v in frozen.items())


def test_foreground_target_resizes_nearest():
    fg = torch.zeros(1, 1, 8, 8)
    fg[..., 2:6, 2:6] = 1
    t = foreground_target({"foreground": fg[:, 0]}, (4, 4))
    assert t.shape == (1, 1, 4, 4) and set(t.unique().tolist()) <= {0.0, 1.0}
    assert foreground_target({}, (4, 4), required=False) is None
