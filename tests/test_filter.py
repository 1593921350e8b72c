"""RANSAC ground plane and the two-stage depth filter (docs/method.md §5), on analytic scenes."""
from __future__ import annotations

import math

import pytest
import torch

from semdepth.config import FilterConfig
from semdepth.filtering import depth_ratios, push_far
from semdepth.geometry.ground import analyse_ground, below_threshold, hood_row
from semdepth.geometry.ransac import fit_planes

H, W = 96, 192
CAM_H = 1.5


def _cfg(**kw) -> FilterConfig:
    base = dict(ransac_iterations=64, inlier_threshold=0.05, margin=1.0, threshold_px=10.0,
                reference_area=640 * 192, near_range=20.0, min_ground_points=50, max_tilt=30.0, batch_size=4)
    base.update(kw)
    return FilterConfig(**base)


def _K(h: int = H, w: int = W) -> torch.Tensor:
    f = 1.1 * w  # Cityscapes-like focal length relative to width
    return torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def _flat_road(h: int = H, w: int = W, max_depth: float = 100.0) -> torch.Tensor:
    """[1,H,W] depth of a level pinhole camera CAM_H above a flat road (y down): Z = fy*h/(v-cy);
    rows at or above the horizon see the sky, clamped to max_depth as the SDE's sigmoid output is."""
    K = _K(h, w)
    v = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    ray_y = (v - K[1, 2]) / K[1, 1]
    depth = torch.where(ray_y > 0, CAM_H / ray_y.clamp(min=1e-9), torch.full_like(ray_y, max_depth))
    return depth.clamp(max=max_depth).unsqueeze(0)


def _hole(h: int = H, w: int = W) -> tuple[slice, slice]:
    """A lead-car-sized region just ahead, in the rows the filter looks at (above the hood)."""
    return slice(int(0.70 * h), int(0.80 * h)), slice(int(0.42 * w), int(0.58 * w))


def _with_hole(h: int = H, w: int = W) -> torch.Tensor:
    d = _flat_road(h, w).clone()
    rs, cs = _hole(h, w)
    d[:, rs, cs] = 100.0  # "pushed to infinity" = the network's maximum depth
    return d


def _road(h: int = H, w: int = W) -> torch.Tensor:
    road = torch.zeros(1, h, w, dtype=torch.bool)
    road[:, h // 2 + 1:] = True
    rs, cs = _hole(h, w)
    road[:, rs, cs] = False  # the car is not road in the pseudo-labels
    return road


def _car(h: int = H, w: int = W) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact depth [1,H,W] of the flat road with a car in the `_hole` box (its back a fronto-parallel
    plane at the road depth of the row below it, where it stands), and the car's [1,H,W] moving mask:
    what SynthCity's exact depth and moving mask show of a lead car."""
    d = _flat_road(h, w).clone()
    rs, cs = _hole(h, w)
    d[:, rs, cs] = d[0, rs.stop, cs.start]
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[:, rs, cs] = True
    return d, mask


def _pushed(factor: float | None, h: int = H, w: int = W) -> torch.Tensor:
    """`_car` depth with the car pushed far (x factor; None: to the maximum depth), as the oracle does."""
    d, m = _car(h, w)
    return torch.from_numpy(push_far(d.numpy(), m.numpy(), 100.0, factor))


# ---------------------------------------------------------------------------------------- RANSAC
def _plane_points(n: int, outlier_share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    normal = torch.tensor([0.08, -1.0, 0.05])
    normal = normal / normal.norm()
    d = 1.7
    x = torch.rand(2, n, generator=g) * 16 - 8
    z = torch.rand(2, n, generator=g) * 25 + 3
    y = -(normal[0] * x + normal[2] * z + d) / normal[1]
    pts = torch.stack([x, y, z], -1) + 0.005 * torch.randn(2, n, 3, generator=g)
    out = torch.rand(2, n, generator=g) < outlier_share
    pts[out] = torch.randn(int(out.sum()), 3, generator=g) * 4 + torch.tensor([0.0, 0.0, 12.0])
    return pts, normal, d


def test_ransac_recovers_plane_with_half_outliers():
    pts, normal, d = _plane_points(1500, 0.5, seed=0)
    valid = torch.ones(pts.shape[:2], dtype=torch.bool)
    fit = fit_planes(pts, valid, iterations=128, threshold=0.02, generator=torch.Generator().manual_seed(3))
    assert fit.ok.all()
    for b in range(2):
        assert torch.rad2deg(torch.arccos((fit.normal[b] @ normal).abs().clamp(max=1))) < 0.5
        assert fit.offset[b] == pytest.approx(d, rel=1e-2)
    assert ((fit.inlier_ratio > 0.45) & (fit.inlier_ratio < 0.55)).all()
    # A plain least-squares fit through everything is pulled off by the outliers: RANSAC is needed.
    c = pts[0] - pts[0].mean(0)
    ls_normal = torch.linalg.eigh(c.T @ c)[1][:, 0]
    ls_offset = (ls_normal @ pts[0].mean(0)).abs()
    assert torch.rad2deg(torch.arccos((ls_normal @ normal).abs().clamp(max=1))) > 2
    assert abs(float(ls_offset) - d) > 0.05 * d


def test_ransac_too_few_points_flags_instead_of_crashing():
    pts, _, _ = _plane_points(50, 0.0, seed=1)
    valid = torch.zeros(2, 50, dtype=torch.bool)
    valid[1, :2] = True  # frame 0: no points, frame 1: two points
    fit = fit_planes(pts, valid, iterations=16, threshold=0.05, generator=torch.Generator().manual_seed(0))
    assert not fit.ok.any()
    assert torch.isnan(fit.normal).all() and torch.isnan(fit.offset).all()
    assert (fit.inlier_ratio == 0).all() and not fit.inliers.any()


def test_ransac_deterministic_per_seed_and_uses_the_generator():
    pts, _, _ = _plane_points(800, 0.4, seed=2)
    valid = torch.ones(pts.shape[:2], dtype=torch.bool)
    run = lambda seed, refit: fit_planes(pts, valid, iterations=8, threshold=0.05, refit_steps=refit,  # noqa: E731
                                         generator=torch.Generator().manual_seed(seed))
    a, b = run(7, 2), run(7, 2)
    assert torch.equal(a.normal, b.normal) and torch.equal(a.offset, b.offset) and torch.equal(a.inliers, b.inliers)
    # Without the refit the result is the best sampled hypothesis, which depends on the draws.
    assert not torch.equal(run(7, 0).normal, run(8, 0).normal)


def test_ransac_tilt_prior_rejects_walls():
    """Points on a wall (normal along z) are not a ground plane when a tilt limit is given. The wall is
    noisy, so some 3-point samples do pass the tilt test: the refitted plane must be checked too."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 300, generator=g) * 4 - 2, torch.rand(1, 300, generator=g) * 2 - 1
    wall = torch.stack([x, y, 6.0 + 0.1 * torch.randn(1, 300, generator=g)], -1)
    valid = torch.ones(1, 300, dtype=torch.bool)
    kw = dict(iterations=256, threshold=0.05)
    free = fit_planes(wall, valid, generator=torch.Generator().manual_seed(0), **kw)
    assert free.ok.all() and free.normal[0, 2].abs() > 0.99
    tilt = dict(up=(0, -1, 0), max_tilt_deg=30)
    sampled = fit_planes(wall, valid, refit_steps=0, generator=torch.Generator().manual_seed(0), **kw, **tilt)
    assert sampled.ok.all()  # a tilted-looking sample exists...
    assert not fit_planes(wall, valid, generator=torch.Generator().manual_seed(0), **kw, **tilt).ok.any()  # ...refit rejects


# ------------------------------------------------------------------------------------------ filter
@pytest.mark.parametrize("use_labels", [True, False])
def test_hole_pushed_to_infinity_is_flagged_clean_road_is_not(use_labels):
    depth = torch.stack([_flat_road(), _with_hole()])  # [2,1,H,W]
    road = torch.cat([_road(), _road()]) if use_labels else None
    res = analyse_ground(depth, _K().expand(2, 3, 3), road, _cfg(), hood_fraction=0.1,
                         generator=torch.Generator().manual_seed(0))
    assert res.enough_ground.all()
    assert res.fallback.tolist() == [not use_labels] * 2
    # The fitted plane is the true one: normal -y, offset = camera height (scale of the depth).
    assert torch.allclose(res.normal, torch.tensor([0.0, -1.0, 0.0]).expand(2, 3), atol=1e-3)
    assert torch.allclose(res.offset, torch.full((2,), CAM_H), rtol=1e-3)
    assert res.below_count[0] == 0 and res.kept[0]
    rs, cs = _hole()
    hole_px = (rs.stop - rs.start) * (cs.stop - cs.start)
    assert res.below_count[1] == hole_px and not res.kept[1]
    assert res.below[1, rs, cs].all()


def test_filter_is_scale_free():
    """Monocular depth has no metric scale: multiplying the depth changes nothing but h."""
    depth = torch.stack([_with_hole(), _with_hole() * 7.3])
    road = torch.cat([_road(), _road()])
    res = analyse_ground(depth, _K().expand(2, 3, 3), road, _cfg(), 0.1, torch.Generator().manual_seed(0))
    assert res.below_count[0] == res.below_count[1] and res.kept.tolist() == [False, False]
    assert res.offset[1] / res.offset[0] == pytest.approx(7.3, rel=1e-3)


def test_only_pixels_within_near_range_are_counted():
    """Just below the horizon the ray meets the ground ~70 camera heights away, where a tiny plane tilt
    error decides above/below: a hole there is not counted; the same hole nearer is."""
    cy, f = _K()[1, 2], _K()[1, 1]
    far_rows = slice(int(cy) + 2, int(cy) + 5)  # Z_g = f/(v-cy) h = 60..140 h
    near_rows = slice(int(cy + f / 20) + 2, int(cy + f / 20) + 5)  # just inside 20 h
    depth = torch.stack([_flat_road(), _flat_road()])
    depth[0, :, far_rows, 80:110] = 100.0 * 50  # far below the (extended) plane, but out of range
    depth[1, :, near_rows, 80:110] = 100.0
    res = analyse_ground(depth, _K().expand(2, 3, 3), torch.cat([_road(), _road()]), _cfg(), 0.1,
                         torch.Generator().manual_seed(0))
    assert res.below_count.tolist() == [0, 3 * 30]
    res = analyse_ground(depth, _K().expand(2, 3, 3), torch.cat([_road(), _road()]), _cfg(near_range=1000.0), 0.1,
                         torch.Generator().manual_seed(0))
    assert res.below_count[0] == 3 * 30


def test_margin_tolerates_small_depth_noise():
    g = torch.Generator().manual_seed(5)
    noisy = _flat_road() * (1 + 0.03 * torch.randn(1, H, W, generator=g))
    res = analyse_ground(noisy.unsqueeze(0), _K().unsqueeze(0), _road(), _cfg(), 0.1, torch.Generator().manual_seed(0))
    assert res.enough_ground.all() and res.kept.all() and res.below_count[0] == 0


def test_threshold_scales_with_resolution():
    assert below_threshold(192, 640, 10.0, 640 * 192) == pytest.approx(10.0)
    assert below_threshold(96, 192, 10.0, 640 * 192) == pytest.approx(1.5)
    assert below_threshold(384, 1280, 10.0, 640 * 192) == pytest.approx(40.0)
    # The same scene at twice the resolution has 4x the below-ground pixels. With the threshold just
    # above the low-resolution count, both resolutions must keep the frame; a fixed pixel count would
    # drop the high-resolution one.
    def run(h, w, cfg):
        return analyse_ground(_with_hole(h, w).unsqueeze(0), _K(h, w).unsqueeze(0), _road(h, w), cfg, 0.1,
                              torch.Generator().manual_seed(0))

    low = run(H, W, _cfg())
    cfg = _cfg(threshold_px=1.2 * float(low.below_count[0]) * (640 * 192) / (H * W))
    low, high = run(H, W, cfg), run(2 * H, 2 * W, cfg)
    assert high.threshold == pytest.approx(4 * low.threshold)
    assert int(high.below_count[0]) == pytest.approx(4 * int(low.below_count[0]), rel=0.1)
    assert bool(low.kept[0]) and bool(high.kept[0])
    assert high.below_count[0] > low.threshold  # the unscaled threshold would have dropped it


def test_frames_without_enough_ground_are_kept_and_flagged():
    depth = torch.stack([_with_hole(), _with_hole(), _with_hole()])
    depth[0, :, H // 2:] = 0.0  # no valid depth in the lower half: no candidates at all
    depth[1, :, H // 2:] = 5.0  # a fronto-parallel wall where the road should be: no plausible plane
    road = torch.cat([_road(), _road(), _road()])
    road[1] = False
    res = analyse_ground(depth, _K().expand(3, 3, 3), road, _cfg(), 0.1, torch.Generator().manual_seed(0))
    assert res.enough_ground.tolist() == [False, False, True]
    assert res.kept.tolist() == [True, True, False]
    assert res.below_count[:2].tolist() == [0, 0]
    assert torch.isnan(res.offset[:2]).all() and (res.inlier_ratio[:2] == 0).all()


def test_hood_rows_are_ignored():
    d = _flat_road().clone()
    d[:, hood_row(H, 0.1):] = 100.0  # garbage depth on the ego hood
    res = analyse_ground(d.unsqueeze(0), _K().unsqueeze(0), _road(), _cfg(), 0.1, torch.Generator().manual_seed(0))
    assert res.kept.all() and res.below_count[0] == 0
    res = analyse_ground(d.unsqueeze(0), _K().unsqueeze(0), _road(), _cfg(), 0.0, torch.Generator().manual_seed(0))
    assert res.below_count[0] > 0


def test_filter_deterministic_per_seed():
    g = torch.Generator().manual_seed(1)
    depth = (_with_hole() * (1 + 0.05 * torch.randn(1, H, W, generator=g))).unsqueeze(0)
    run = lambda: analyse_ground(depth, _K().unsqueeze(0), _road(), _cfg(), 0.1, torch.Generator().manual_seed(11))  # noqa: E731
    a, b = run(), run()
    assert torch.equal(a.normal, b.normal) and torch.equal(a.below, b.below)
    assert math.isfinite(float(a.offset[0]))


# ------------------------------------------------------------------- the artifact, measured and swept
def test_exact_car_is_kept_the_same_car_pushed_far_is_dropped():
    """Exact depth keeps the frame; the lead car's (moving) pixels pushed x5 or to the maximum drop it,
    and only car pixels are below the ground."""
    exact, mask = _car()
    depth = torch.stack([exact, _pushed(5.0), _pushed(None)])
    res = analyse_ground(depth, _K().expand(3, 3, 3), torch.cat([_road()] * 3), _cfg(), 0.1,
                         torch.Generator().manual_seed(0))
    assert res.enough_ground.all()
    assert res.kept.tolist() == [True, False, False]
    assert res.below_count[0] == 0
    for j in (1, 2):
        assert not res.below[j][~mask[0]].any() and res.below[j][mask[0]].any()


def test_depth_ratios_are_one_on_exact_depth_and_the_factor_on_pushed_pixels():
    import numpy as np

    d, m = _car()
    gt, mask = d[0].numpy(), m[0].numpy()
    kw = dict(hood_fraction=0.1, max_depth=100.0)
    exact = depth_ratios(3.0 * gt, gt, mask, **kw)  # any scale: median scaling removes it
    assert exact.moving_px == int(mask.sum())
    assert exact.static == pytest.approx(1.0) and exact.moving == pytest.approx(1.0)
    assert exact.matched == pytest.approx(1.0)
    pushed = depth_ratios(3.0 * push_far(gt, mask, 100.0, 5.0), gt, mask, **kw)
    assert pushed.static == pytest.approx(1.0, abs=0.05)  # the scale moves a little with the pushed pixels
    assert pushed.moving == pytest.approx(5.0 * pushed.static, rel=1e-6)
    assert pushed.matched == pytest.approx(pushed.static, rel=1e-6)
    # A depth-blind network (one depth everywhere) gives a near car a high ratio, but static pixels
    # as near get the same: the matched ratio tells it apart from a car pushed far.
    blind = depth_ratios(np.full_like(gt, 7.0), gt, mask, **kw)
    assert blind.moving > 1.5 and blind.moving == pytest.approx(blind.matched, rel=0.3)
    # No moving pixels, or no valid GT: the measure is absent (NaN), not an error.
    still = depth_ratios(gt, gt, np.zeros_like(mask), **kw)
    assert still.moving_px == 0 and math.isnan(still.moving) and still.static == pytest.approx(1.0)
    assert math.isnan(still.matched)
    empty = depth_ratios(gt, np.zeros_like(gt), mask, **kw)
    assert empty.moving_px == 0 and math.isnan(empty.static) and math.isnan(empty.moving)


def test_sweep_counts_are_monotone_in_the_margin_and_change_nothing_else():
    g = torch.Generator().manual_seed(3)
    base = torch.stack([_flat_road(), _with_hole(), _pushed(3.0), _pushed(None)])
    depth = base * (1 + 0.05 * torch.randn(base.shape, generator=g))
    margins = [0.0, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0]
    args = (depth, _K().expand(4, 3, 3), torch.cat([_road()] * 4), _cfg(), 0.1)
    res = analyse_ground(*args, torch.Generator().manual_seed(0), margins=margins)
    c = res.margin_counts
    assert c.shape == (4, len(margins)) and c.dtype == torch.int64
    assert (c[:, 1:] <= c[:, :-1]).all()
    assert torch.equal(c[:, margins.index(1.0)], res.below_count)  # the configured margin is the verdict's count
    assert c[:, 0].sum() > c[:, -1].sum()
    plain = analyse_ground(*args, torch.Generator().manual_seed(0))
    assert plain.margin_counts.shape == (4, 0)
    assert torch.equal(plain.below, res.below) and torch.equal(plain.kept, res.kept)
    assert torch.equal(plain.normal, res.normal)


# ------------------------------------------------------------------------------------------- stage
@pytest.fixture(scope="module")
def stage1_ckpt(tmp_path_factory):
    """One randomly initialised stage-1 checkpoint shared by the stage tests (building it is the slow part)."""
    from semdepth.config import SdeConfig, to_dict
    from semdepth.models.sde import build_depth_net, build_pose_net, save_sde

    path = tmp_path_factory.mktemp("ckpt") / "sde_stage1.pt"
    sde = to_dict(SdeConfig())
    torch.manual_seed(0)
    save_sde(path, build_depth_net(sde), build_pose_net(sde), sde, {})
    return path


def _workspace(root, ckpt, n_snippets: int = 4, with_gt: bool = False) -> tuple[list[str], list[bool]]:
    """A tiny prepared dataset + pseudo-labels + stage-1 checkpoint + params under `root`; `with_gt`:
    SynthCity's extras too, exact depth and a moving mask (`_car`) for every frame."""
    import numpy as np
    import yaml

    import os

    from semdepth.data.cityscapes import write_manifest
    from semdepth.data.frames import write_png
    from semdepth.io import write_table

    h, w = 64, 128
    K = _K(h, w)
    prep, pl_dir = root / "data/prepared", root / "data/pseudolabels"
    (prep / "img").mkdir(parents=True)
    (pl_dir / "tid").mkdir(parents=True)
    (prep / "gt").mkdir(parents=True)
    rng = np.random.default_rng(0)
    car_depth, car_mask = (t[0].numpy() for t in _car(h, w))
    rows, pl_rows, ids, leads = [], [], [], []
    for s in range(n_snippets):
        lead = s % 2 == 1
        for off in (-1, 0, 1):
            fid = f"town_{s:06d}_{19 + off:06d}"
            write_png(prep / "img" / f"{fid}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            rows.append(dict(id=fid, split="train", domain="target", city="town", sequence=s, frame=19 + off,
                             offset=off, annotated=off == 0, image=f"img/{fid}.png",
                             prev_image=None if off == -1 else "x", next_image=None if off == 1 else "x",
                             lead_car=lead, fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]),
                             cy=float(K[1, 2]), baseline=0.2, height=h, width=w))
            if with_gt:
                np.save(prep / "gt" / f"{fid}_depth.npy", car_depth.astype(np.float32))
                write_png(prep / "gt" / f"{fid}_moving.png", (car_mask * 255).astype(np.uint8))
                rows[-1].update(depth_exact=f"gt/{fid}_depth.npy", moving=f"gt/{fid}_moving.png")
            tid = None
            if s != 2:  # snippet 2: binary pseudo-labels only -> lower-central fallback
                tid = f"tid/{fid}.png"
                write_png(pl_dir / tid, np.where(_road(h, w)[0].numpy(), 0, 2).astype(np.uint8))
            pl_rows.append(dict(id=fid, split="train", trainid=tid, confidence="c.png", foreground="f.png"))
            if off == 0:
                ids.append(fid)
                leads.append(lead)
    rows.append({**rows[1], "id": "town_000099_000019", "split": "val", "domain": "target"})  # not train
    write_manifest(rows, prep / "manifest.parquet")
    import pandas as pd

    write_table(pd.DataFrame(pl_rows), pl_dir / "pseudolabels.parquet")
    (root / "data/models").mkdir(parents=True)
    os.symlink(ckpt, root / "data/models/sde_stage1.pt")
    params = yaml.safe_load(open("profiles/tiny.yaml"))
    params["tracking"]["enabled"] = False
    params["compute"].update(num_workers=0, device="cpu")
    params["filter"]["batch_size"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return ids, leads


def test_filter_stage_end_to_end(tmp_path, monkeypatch, stage1_ckpt):
    import pandas as pd

    import semdepth.filtering as filtering
    import stages.filter as fs
    from semdepth.io import read_json

    ids, leads = _workspace(tmp_path, stage1_ckpt)
    monkeypatch.chdir(tmp_path)
    lead_of = dict(zip(ids, leads))
    order = sorted(ids)

    def fake_depth(depth_net, batch, sde_cfg, device):  # analytic stage-1 depth: lead car -> hole at infinity
        h, w = batch["image"].shape[-2:]
        return torch.stack([(_with_hole(h, w) if lead_of[order[int(i)]] else _flat_road(h, w)) * 3.0
                            for i in batch["index"]])

    monkeypatch.setattr(filtering, "predict_depth", fake_depth)
    fs.main("params.yaml")
    table = pd.read_parquet("data/filter/frames.parquet")
    assert list(table.columns) == filtering.COLUMNS
    assert table["id"].tolist() == order  # only the train triplets, sorted
    assert table["kept"].tolist() == [not lead_of[i] for i in order]
    assert table["enough_ground"].all()
    assert table["offset"].to_numpy() == pytest.approx(3 * CAM_H, rel=1e-3)
    m = read_json("metrics/filter.json")
    assert m["frames"] == 4 and m["dropped"] == 2 and m["share_dropped"] == 0.5
    assert m["fallback_frames"] == 1 and m["not_enough_ground"] == 0
    assert m["synthcity"]["precision"] == 1.0 and m["synthcity"]["recall"] == 1.0
    assert m["synthcity"]["clean_wrongly_dropped"] == 0.0
    assert (tmp_path / "metrics/figures/filter/dropped.png").stat().st_size > 1000
    assert not list((tmp_path / "data").glob(".*tmp*"))  # nothing half-written left behind
    # No GT depth or moving masks in this manifest: the artifact measure is absent, not an error.
    assert table[filtering.RATIO_COLUMNS].isna().all().all() and "artifact" not in m
    sweep = pd.read_csv("metrics/plots/filter_sweep.csv")
    row = sweep[(sweep["margin"] == 1.0) & (sweep["threshold_px"] == 10.0)].iloc[0]
    assert row["recall"] == 1.0 and row["clean_dropped"] == 0.0 and row["dropped"] == 2


def test_filter_stage_measures_the_artifact_and_sweeps(tmp_path, monkeypatch, stage1_ckpt):
    """With exact depth and moving masks: the lead cars pushed x5 by the stage-1 depth are dropped,
    measured (ratio ~5 on their moving pixels, ~1 elsewhere) and swept over margins and thresholds."""
    import numpy as np
    import pandas as pd

    import semdepth.filtering as filtering
    import stages.filter as fs
    from semdepth.io import read_json

    ids, leads = _workspace(tmp_path, stage1_ckpt, with_gt=True)
    monkeypatch.chdir(tmp_path)
    lead_of = dict(zip(ids, leads))
    order = sorted(ids)

    def fake_depth(depth_net, batch, sde_cfg, device):  # stage-1 depth: exact, lead cars pushed x5
        h, w = batch["image"].shape[-2:]
        return torch.stack([(_pushed(5.0, h, w) if lead_of[order[int(i)]] else _car(h, w)[0]) * 3.0
                            for i in batch["index"]])

    monkeypatch.setattr(filtering, "predict_depth", fake_depth)
    fs.main("params.yaml")
    table = pd.read_parquet("data/filter/frames.parquet")
    assert list(table.columns) == filtering.COLUMNS
    lead = table["id"].map(lead_of).to_numpy(bool)
    assert table["kept"].tolist() == (~lead).tolist()
    car_px = int(_car(64, 128)[1].sum())
    assert (table["moving_px"] == car_px).all()
    assert table["static_ratio"].to_numpy() == pytest.approx(1.0, abs=0.05)
    assert (table["moving_ratio"] / table["static_ratio"]).to_numpy()[lead] == pytest.approx(5.0, rel=1e-5)
    assert table.loc[~lead, "moving_ratio"].to_numpy() == pytest.approx(1.0)
    assert table.loc[~lead, "lead_ratio"].isna().all()
    assert np.array_equal(table.loc[lead, "lead_ratio"], table.loc[lead, "moving_ratio"])
    m = read_json("metrics/filter.json")
    art = m["artifact"]
    assert art["lead_car"]["frames"] == 2 and art["clean"]["frames"] == 2 and art["all"]["frames"] == 4
    assert art["lead_car"]["moving_ratio_median"] == pytest.approx(5.0, rel=0.05)
    assert art["clean"]["moving_ratio_median"] == pytest.approx(1.0)
    assert art["lead_car"]["share_moving_ratio_above"] == 1.0 and art["clean"]["share_moving_ratio_above"] == 0.0
    assert art["lead_car"]["excess_median"] == pytest.approx(5.0, rel=1e-5)
    assert art["clean"]["excess_median"] == pytest.approx(1.0)
    assert art["lead_car"]["share_excess_above"] == 1.0 and art["clean"]["share_excess_above"] == 0.0
    assert m["synthcity"]["recall"] == 1.0 and m["synthcity"]["clean_wrongly_dropped"] == 0.0

    sweep = pd.read_csv("metrics/plots/filter_sweep.csv")
    assert set(filtering.SWEEP_MARGINS) <= set(sweep["margin"])
    assert set(filtering.SWEEP_THRESHOLDS_PX) <= set(sweep["threshold_px"])
    row = sweep[(sweep["margin"] == 1.0) & (sweep["threshold_px"] == 10.0)].iloc[0]
    assert row["dropped"] == m["dropped"] and row["recall"] == 1.0 and row["clean_dropped"] == 0.0
    grid = sweep.pivot(index="margin", columns="threshold_px", values="dropped").sort_index().sort_index(axis=1)
    assert (grid.diff(axis=0).fillna(0) <= 0).all().all()  # stricter margin: never more drops
    assert (grid.diff(axis=1).fillna(0) <= 0).all().all()  # higher threshold: never more drops
    assert sweep["recall"].max() == 1.0 and sweep["recall"].min() == 0.0  # strict corners miss the x5 cars
    assert (tmp_path / "metrics/figures/filter/sweep.png").stat().st_size > 1000


def test_stage1_depth_inference_shapes(stage1_ckpt):
    """The real network path: a stage-1 checkpoint predicts depth in its range at the input size."""
    import semdepth.filtering as filtering
    from semdepth.models.sde import load_sde

    net, _, cfg = load_sde(stage1_ckpt, "cpu")
    batch = {"image": torch.rand(2, 3, 64, 128)}
    d = filtering.predict_depth(net, batch, cfg, torch.device("cpu"))
    assert d.shape == (2, 1, 64, 128)
    assert (d >= cfg["min_depth"]).all() and (d <= cfg["max_depth"] * 1.0001).all()


def test_filter_stage_missing_pseudolabels_is_one_line_error(tmp_path, monkeypatch, stage1_ckpt):
    import pandas as pd

    import stages.filter as fs
    from semdepth import SemdepthError

    _workspace(tmp_path, stage1_ckpt, n_snippets=1)
    monkeypatch.chdir(tmp_path)
    pl = pd.read_parquet("data/pseudolabels/pseudolabels.parquet")
    pl[pl["id"] != "town_000000_000019"].to_parquet("data/pseudolabels/pseudolabels.parquet")
    with pytest.raises(SemdepthError, match="pseudolabels.parquet: no pseudo-labels for 1 training frames"):
        fs.main("params.yaml")
    assert not (tmp_path / "data/filter").exists()


def test_frame_dataset_intrinsics_and_size_checks(tmp_path):
    """The filter's frames: K per frame, and one-line errors naming a resized image or pseudo-label."""
    import numpy as np

    from semdepth import SemdepthError
    from semdepth.data.frames import FrameDataset, write_png

    write_png(tmp_path / "a.png", np.zeros((8, 16, 3), np.uint8))
    write_png(tmp_path / "a_trainid.png", np.zeros((8, 16), np.uint8))
    write_png(tmp_path / "small_trainid.png", np.zeros((4, 16), np.uint8))
    K = np.tile(np.eye(3, dtype=np.float32), (2, 1, 1))
    K[1, 0, 0] = 5.0
    ds = FrameDataset([tmp_path / "a.png"] * 2, [tmp_path / "a_trainid.png", None], intrinsics=K,
                      sizes=[(8, 16)] * 2, label_producer="pseudolabel")
    item = ds[1]
    assert item["index"] == 1 and item["K"][0, 0] == 5.0 and (item["label"] == 255).all()
    assert ds[0]["label"].shape == (8, 16) and (ds[0]["label"] == 0).all()
    with pytest.raises(SemdepthError, match=r"a.png: image is \(8, 16\), the manifest says \(8, 32\); rerun downsample"):
        FrameDataset([tmp_path / "a.png"], intrinsics=K[:1], sizes=[(8, 32)])[0]
    with pytest.raises(SemdepthError, match=r"small_trainid.png: label size \(4, 16\) .*; rerun pseudolabel"):
        FrameDataset([tmp_path / "a.png"], [tmp_path / "small_trainid.png"], label_producer="pseudolabel")[0]
    with pytest.raises(ValueError, match="one size per image"):
        FrameDataset([tmp_path / "a.png"], intrinsics=K[:1])
