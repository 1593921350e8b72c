"""SynthCity: the geometry is right (re-projection, disparity, object motion), the files are Cityscapes.

Renders are tiny (at most 128x256, a handful of snippets) so the whole module runs in seconds.
"""
from __future__ import annotations

import csv
import dataclasses
import filecmp
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from cityscapesscripts.helpers.labels import id2label, name2label

from semdepth.config import ConfigError, SynthConfig, parse_params
from semdepth.data.synthcity.camera import Intrinsics
from semdepth.data.synthcity.render import make_scene, render_frame, render_snippet, snippet_name
from semdepth.data.synthcity.road import Road
from semdepth.data.synthcity.shading import HOOD_EDGE
from semdepth.data.synthcity.writer import write_dataset

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("road", "sidewalk", "building", "fence", "pole", "traffic light", "traffic sign", "vegetation",
            "terrain", "sky", "person", "car", "truck")


def small_cfg(**kw) -> SynthConfig:
    base = dict(height=64, width=128, train_snippets=2, val_snippets=1, source_snippets=1, workers=1)
    base.update(kw)
    return dataclasses.replace(SynthConfig(), **base)


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------
def warp_into(target, source, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source image resampled at the target pixels through true depth and poses; and where valid.

    Valid: target depth known, the point lands inside the source image in front of the camera, it
    is not occluded there (source depth agrees within 3 %), it is not on a depth edge (bilinear
    sampling would mix foreground and background there), and neither end is an independently
    moving object (those break the static-world assumption by design).
    """
    h, w = target.depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = target.depth.astype(np.float64)
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)], -1)
    T_src_tgt = np.linalg.inv(source.pose) @ target.pose
    ps = pts @ T_src_tgt.T
    zs = np.where(ps[..., 2] > 1e-6, ps[..., 2], 1e-6)
    us, vs = K[0, 0] * ps[..., 0] / zs + K[0, 2], K[1, 1] * ps[..., 1] / zs + K[1, 2]
    inside = (ps[..., 2] > 0) & (us >= 0) & (us <= w - 1) & (vs >= 0) & (vs <= h - 1)
    ui, vi = np.clip(np.rint(us), 0, w - 1).astype(int), np.clip(np.rint(vs), 0, h - 1).astype(int)
    seen = source.depth[vi, ui]
    kernel = np.ones((3, 3), np.uint8)
    near, far = cv2.erode(target.depth, kernel), cv2.dilate(target.depth, kernel)
    flat = far < 1.05 * near
    valid = (inside & (z > 0) & flat & (seen > 0) & (np.abs(seen - zs) < 0.03 * zs) & ~target.moving
             & ~source.moving[vi, ui])
    u0, v0 = np.clip(np.floor(us), 0, w - 2).astype(int), np.clip(np.floor(vs), 0, h - 2).astype(int)
    a, b = np.clip(us - u0, 0, 1)[..., None], np.clip(vs - v0, 0, 1)[..., None]
    img = source.image.astype(np.float64)
    warped = (img[v0, u0] * (1 - a) * (1 - b) + img[v0, u0 + 1] * a * (1 - b) + img[v0 + 1, u0] * (1 - a) * b
              + img[v0 + 1, u0 + 1] * a * b)
    return warped, valid


@pytest.mark.parametrize("index", [0, 3])
def test_reprojection_reproduces_the_frame(index: int) -> None:
    cfg = small_cfg(height=128, width=256)
    K = Intrinsics.cityscapes(cfg.height, cfg.width).matrix()
    _, (prev, cur, nxt) = render_snippet(cfg, "train", index, offsets=[-1, 0, 1])
    for src in (prev, nxt):
        warped, valid = warp_into(cur, src, K)
        assert valid.mean() > 0.4
        target = cur.image.astype(np.float64)
        err = np.abs(warped - target).mean(-1)[valid].mean()
        identity = np.abs(src.image.astype(np.float64) - target).mean(-1)[valid].mean()
        # sensor noise alone gives ~1.4 grey levels (the rest: resampling across colour edges)
        assert err < 3.0, err
        assert identity > 2.0 * err, (err, identity)


def test_wrong_pose_does_not_reproduce_the_frame() -> None:
    """The check above has teeth: a pose off by 20 cm forward warps visibly worse."""
    cfg = small_cfg(height=128, width=256)
    K = Intrinsics.cityscapes(cfg.height, cfg.width).matrix()
    _, (cur, nxt) = render_snippet(cfg, "train", 0, offsets=[0, 1])
    warped, valid = warp_into(cur, nxt, K)
    good = np.abs(warped - cur.image).mean(-1)[valid].mean()
    shifted = dataclasses.replace(nxt, pose=nxt.pose @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.2],
                                                                  [0, 0, 0, 1.0]]))
    warped_bad, valid_bad = warp_into(cur, shifted, K)
    m = valid & valid_bad
    bad = np.abs(warped_bad - cur.image).mean(-1)[m].mean()
    assert bad > 1.3 * good, (good, bad)


def _centroid(mask: np.ndarray) -> np.ndarray:
    v, u = np.nonzero(mask)
    return np.array([u.mean(), v.mean()])


def test_lead_car_stays_put_while_the_world_flows_outward() -> None:
    cfg = small_cfg(height=128, width=256, lead_car_share=1.0)
    K = Intrinsics.cityscapes(cfg.height, cfg.width).matrix()
    checked_parked = 0
    for index in range(3):
        scene, frames = render_snippet(cfg, "train", index)  # offsets -2..2
        assert scene.lead_car
        roles = scene.objects.role
        lead = roles.index("lead")
        assert all(scene.objects.moving[[lead]]) and all((f.instance == lead).sum() > 100 for f in frames)
        c = np.array([_centroid(f.instance == lead) for f in frames])
        assert np.abs(c - c[2]).max() < 1.5, c  # body jitter only (a fraction of a pixel per frame)
        assert all(f.moving[f.instance == lead].all() for f in frames)

        first, last = frames[0], frames[-1]
        for obj, role in enumerate(roles):
            if role != "parked":
                continue
            m0, m1 = first.instance == obj, last.instance == obj
            if m0.sum() < 300 or m1.sum() < 300:  # near enough to flow by pixels in 4 frames
                continue
            vs, us = np.nonzero(m0 | m1)
            if us.min() == 0 or us.max() == cfg.width - 1 or vs.max() >= cfg.height * (1 - HOOD_EDGE) - 8:
                continue  # cut by the image border or the hood: centroids would not be comparable
            assert not first.moving[m0].any()
            # where the static world would put the car's frame-0 pixels in the last frame ...
            h, w = m0.shape
            v, u = np.nonzero(m0)
            z = first.depth[v, u].astype(np.float64)
            pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)], 1)
            p = pts @ (np.linalg.inv(last.pose) @ first.pose).T
            pred = np.stack([K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]], 1)
            c0, c1 = _centroid(m0), _centroid(m1)
            # ... is where it is (it moves like the background), and that is outward and far
            assert np.linalg.norm(pred.mean(0) - c1) < 1.5, (pred.mean(0), c1)
            assert abs(c1[0] - K[0, 2]) - abs(c0[0] - K[0, 2]) > 1.0, (c0, c1)
            assert np.linalg.norm(c1 - c0) > 2.5 * max(np.abs(c - c[2]).max(), 0.8), (c0, c1, c)
            checked_parked += 1
    assert checked_parked >= 2


# ------------------------------------------------------------------------------------------------
# lead cars near the ego speed (synth.lead_car_rel_speed, synth.lead_cars_max)
# ------------------------------------------------------------------------------------------------
def _straight_and_steady(scene):
    """The same street straightened, without the camera's body motion: a car's image motion is then
    a closed-form function of its offset, depth and relative speed."""
    road = Road(0.0)
    traj = dataclasses.replace(scene.traj, road=road, pitch0=0.0, pitch_amp=0.0, yaw_amp=0.0, bounce_amp=0.0)
    return dataclasses.replace(scene, road=road, traj=traj)


def _lead_scene(cfg: SynthConfig, min_rel: float):
    """The first train snippet whose (first) lead car drew a relative speed of at least `min_rel` m/s."""
    for index in range(20):
        scene = make_scene(cfg, "train", index)
        if scene.lead_car and abs(scene.meta["lead_rel_speeds"][0]) >= min_rel:
            return scene
    raise AssertionError(f"no lead car faster than {min_rel} m/s relative to the ego car")


def _project(K: np.ndarray, pose: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [N,3] -> pixels [N,2] and z-depths [N] of the camera at `pose` (T_world_cam)."""
    cam = (np.linalg.inv(pose) @ np.c_[points, np.ones(len(points))].T).T
    uv = np.stack([K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2], K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]], 1)
    return uv, cam[:, 2]


def _corners(scene, obj: int, t: float) -> np.ndarray:
    """World corners of every box of object `obj` at time t (straight road: the a axis is +Y)."""
    placed, parts = scene.parts_at(t), scene.parts
    sign = np.array([[a, b, z] for a in (-1, 1) for b in (-1, 1) for z in (-1, 1)], np.float64)
    k = np.nonzero(parts.obj == obj)[0]
    half = parts.half[k][:, None, :] * sign[None]
    return (placed["center"][k][:, None, :] + half[..., [1, 0, 2]]).reshape(-1, 3)


@pytest.mark.parametrize("rel_speed", [0.0, 3.0])
def test_near_ego_speed_lead_car_moves_as_its_relative_speed_predicts(rel_speed: float) -> None:
    cfg = small_cfg(height=256, width=512, lead_car_share=1.0, lead_car_rel_speed=rel_speed)
    scene = _straight_and_steady(_lead_scene(cfg, 0.5 * rel_speed))
    rel = scene.meta["lead_rel_speeds"][0]
    o, lead = scene.objects, scene.objects.role.index("lead")
    assert abs(rel) <= rel_speed and o.v[lead] == scene.traj.speed + rel and o.moving[lead]
    intr = Intrinsics.cityscapes(cfg.height, cfg.width)
    K = intr.matrix()
    offsets = (-8, 8)  # 16 frames apart: the car's depth changes by rel * 0.94 s
    times = [off / cfg.fps for off in offsets]
    # closed form: camera axes (right, down, forward) = (l, -z, s) on the straight, steady road
    body = int(np.nonzero(scene.parts.obj == lead)[0][0])  # the car's body box
    centre = scene.parts_at(0.0)["center"][body]
    x, y = o.l[lead] - scene.traj.lateral, scene.traj.height - centre[2]
    uv, z = zip(*(_project(K, scene.traj.pose(t), scene.parts_at(t)["center"][[body]]) for t in times))
    for t, uv_t, z_t in zip(times, uv, z):
        depth = o.s[lead] + rel * t  # the camera is at s = speed * t, the car at s0 + (speed + rel) * t
        assert abs(z_t[0] - depth) < 1e-9
        np.testing.assert_allclose(uv_t[0], [K[0, 0] * x / depth + K[0, 2], K[1, 1] * y / depth + K[1, 2]],
                                   atol=1e-6)
    inv_depth = [1 / (o.s[lead] + rel * t) for t in times]
    expected = np.array([K[0, 0] * x, K[1, 1] * y]) * (inv_depth[1] - inv_depth[0])
    np.testing.assert_allclose(uv[1][0] - uv[0][0], expected, atol=1e-6)
    if rel_speed == 0:
        assert np.abs(expected).max() == 0.0

    # the rendered frames agree: the rear face (parallel to the image plane) recedes by rel * dt, and
    # the silhouette is as wide as the projected boxes
    rays = intr.camera_rays()
    frames = [render_frame(scene, intr, off, cfg.fps, rays) for off in offsets]
    masks = [f.instance == lead for f in frames]
    rear = [float(f.depth[m].min()) for f, m in zip(frames, masks)]
    assert abs((rear[1] - rear[0]) - rel * (times[1] - times[0])) < 1e-3, (rear, rel)
    widths = [int(np.ptp(np.nonzero(m.any(0))[0])) + 1 for m in masks]
    predicted = [float(np.ptp(_project(K, scene.traj.pose(t), _corners(scene, lead, t))[0][:, 0])) for t in times]
    for w, p in zip(widths, predicted):
        assert abs(w - p) < 1.5, (widths, predicted)
    assert abs((widths[1] - widths[0]) - (predicted[1] - predicted[0])) < 1.5, (widths, predicted)
    assert all(f.moving[m].all() for f, m in zip(frames, masks))
    if rel_speed == 0:
        assert np.array_equal(masks[0], masks[1]) and rear[0] == rear[1]
    else:
        assert abs(predicted[1] - predicted[0]) > 4.0  # the check above has teeth: the car visibly moved


@pytest.mark.parametrize("offsets", [[-2, -1, 0, 1, 2], [-19, 0, 10]])
def test_several_lead_cars_queue_ahead_near_the_ego_speed(offsets: list[int]) -> None:
    cfg = small_cfg(lead_car_share=1.0, lead_car_rel_speed=5.0, lead_cars_max=3, frame_offsets=offsets,
                    val_frame_offsets=[0])
    counts, shown = [], None
    for index in range(16):
        scene = make_scene(cfg, "train", index)
        o = scene.objects
        lead = [k for k, role in enumerate(o.role) if role == "lead"]
        rel = scene.meta["lead_rel_speeds"]
        counts.append(len(lead))
        assert 1 <= len(lead) <= 3 and len(rel) == len(lead) and o.moving[lead].all()
        np.testing.assert_allclose(o.v[lead] - scene.traj.speed, rel, atol=1e-12)
        assert all(abs(r) <= 5.0 for r in rel) and len(set(rel)) == len(rel)
        assert (np.abs(o.l[lead] - scene.lane / 2) < 0.35).all()  # in the ego lane
        for t in np.arange(min(offsets), max(offsets) + 1) / cfg.fps:  # a car length apart in every frame
            assert (np.diff(np.sort(o.s[lead] + o.v[lead] * t)) > 5.0).all()
        if len(lead) > 1 and shown is None:
            shown = index
    assert max(counts) == 3 and len(set(counts)) > 1  # 1..3 cars, drawn per snippet
    scene, frames = render_snippet(cfg, "train", shown, offsets=[min(offsets), 0, max(offsets)])
    lead = [k for k, role in enumerate(scene.objects.role) if role == "lead"]
    assert all(f.moving[np.isin(f.instance, lead)].all() and (f.instance == lead[0]).any() for f in frames)


def test_labels_are_cityscapes_and_cover_the_classes() -> None:
    cfg = small_cfg(height=96, width=192)
    seen = np.zeros(256, bool)
    hood_rows = int(np.floor(cfg.height * HOOD_EDGE))
    ego = name2label["ego vehicle"].id
    for split, n in (("train", 5), ("source", 3)):
        for index in range(n):
            _, frames = render_snippet(cfg, split, index, offsets=[0])
            lab = frames[0].label
            seen[np.unique(lab)] = True
            assert (lab[-hood_rows:] == ego).all()
            invalid = (lab == ego) | (lab == name2label["sky"].id)
            assert (frames[0].depth[invalid] == 0).all() and (frames[0].depth[~invalid] > 0).all()
    ids = np.nonzero(seen)[0]
    assert all(int(i) in id2label and id2label[int(i)].id >= 0 for i in ids)
    names = {id2label[int(i)].name for i in ids}
    missing = [c for c in REQUIRED if c not in names]
    assert not missing, missing


def test_hood_is_static_and_source_differs_in_style() -> None:
    cfg = small_cfg()
    _, frames = render_snippet(cfg, "train", 1)
    hood = frames[0].label == name2label["ego vehicle"].id
    assert all(((f.label == name2label["ego vehicle"].id) == hood).all() for f in frames)
    assert all(np.abs(f.image[hood].astype(int) - frames[0].image[hood]).mean() < 3 for f in frames)
    # the source domain is lit by a low sun: warmer (red over blue) than the target city on average
    def warmth(split: str) -> float:
        images = [render_snippet(cfg, split, i, offsets=[0])[1][0].image.astype(float) for i in range(3)]
        return float(np.mean([im[..., 0].mean() - im[..., 2].mean() for im in images]))

    assert warmth("source") > warmth("train") + 5


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, SynthConfig]:
    cfg = small_cfg(lead_car_share=0.5)
    root = tmp_path_factory.mktemp("synth") / "a"
    summary = write_dataset(cfg, root, workers=1, progress=False)
    return root, summary, cfg


def test_layout_and_extras(written) -> None:
    root, summary, cfg = written
    assert summary["frames"] == 3 * 5 + 1
    rows = (root / "snippets.csv").read_text().splitlines()
    assert rows[0].startswith("split,city,sequence,lead_car,speed")
    assert len(rows) == 1 + 4
    for line in rows[1:]:
        split, city, seq = line.split(",")[:3]
        ann = f"{city}_{int(seq):06d}_000019"
        for kind, suffix in (("leftImg8bit", "_leftImg8bit.png"), ("gtFine", "_gtFine_labelIds.png"),
                             ("gtFine", "_gtFine_color.png"), ("gtFine", "_gtFine_instanceIds.png"),
                             ("camera", "_camera.json"), ("disparity", "_disparity.png")):
            assert (root / kind / split / city / f"{ann}{suffix}").is_file(), (kind, ann)
        frames = [0] if split == "source" else cfg.frame_offsets
        seq_dir = root / "leftImg8bit_sequence" / split / city
        assert seq_dir.is_dir() != (split == "source")
        for off in frames:
            fid = f"{city}_{int(seq):06d}_{19 + off:06d}"
            if split != "source":
                assert (seq_dir / f"{fid}_leftImg8bit.png").is_file()
            depth = np.load(root / "depth" / split / city / f"{fid}_depth.npy")
            assert depth.dtype == np.float32 and depth.shape == (cfg.height, cfg.width)
            pose = np.array(json.loads((root / "pose" / split / city / f"{fid}_pose.json").read_text())["T_world_cam"])
            assert pose.shape == (4, 4) and np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9)
            mov = cv2.imread(str(root / "moving" / split / city / f"{fid}_moving.png"), cv2.IMREAD_UNCHANGED)
            assert mov.dtype == np.uint8 and set(np.unique(mov)) <= {0, 255}
        img = cv2.imread(str(root / "leftImg8bit" / split / city / f"{ann}_leftImg8bit.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (cfg.height, cfg.width, 3) and img.dtype == np.uint8
        lab = cv2.imread(str(root / "gtFine" / split / city / f"{ann}_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
        col = cv2.imread(str(root / "gtFine" / split / city / f"{ann}_gtFine_color.png"), cv2.IMREAD_UNCHANGED)
        lut = np.array([id2label[i].color if i in id2label else (0, 0, 0) for i in range(256)], np.uint8)
        assert lab.ndim == 2 and (col[..., ::-1] == lut[lab]).all()


def test_disparity_decodes_to_the_exact_depth(written) -> None:
    root, _, _ = written
    files = sorted((root / "disparity").rglob("*_disparity.png"))
    assert files
    for path in files:
        fid = path.name[: -len("_disparity.png")]
        split, city = path.parent.parent.name, path.parent.name
        cam = json.loads((root / "camera" / split / city / f"{fid}_camera.json").read_text())
        fx, baseline = cam["intrinsic"]["fx"], cam["extrinsic"]["baseline"]
        assert {"fx", "fy", "u0", "v0"} <= set(cam["intrinsic"])
        p = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert p.dtype == np.uint16
        depth = np.load(root / "depth" / split / city / f"{fid}_depth.npy").astype(np.float64)
        assert ((p == 0) == (depth == 0)).all()
        valid = p > 1
        disp = (p[valid].astype(np.float64) - 1.0) / 256.0
        # uint16 quantisation: the disparity is exact to half a step (1/512 px)
        assert np.abs(disp - baseline * fx / depth[valid]).max() <= 0.5 / 256 + 1e-9
        decoded = baseline * fx / disp
        rel = np.abs(decoded - depth[valid]) / depth[valid]
        assert np.all(rel <= (0.5 / 256) / disp + 1e-9)


def test_same_params_same_bytes_other_seed_other_world(written, tmp_path: Path) -> None:
    root, _, cfg = written
    again = tmp_path / "b"
    write_dataset(cfg, again, workers=2, progress=False)  # other worker count, other completion order
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(root, again, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    _, other = render_snippet(dataclasses.replace(cfg, seed=cfg.seed + 1), "train", 0, offsets=[0])
    mine = cv2.imread(str(next((root / "leftImg8bit" / "train").rglob("*_000000_000019_leftImg8bit.png"))))
    assert np.abs(other[0].image[..., ::-1].astype(int) - mine).mean() > 10


def test_synthesize_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import synthesize

    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["synth"].update(train_snippets=1, val_snippets=1, source_snippets=1, workers=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    synthesize.main("params.yaml")
    metrics = json.loads((tmp_path / "metrics" / "synthesize.json").read_text())
    assert metrics["frames"] == 11 and metrics["frames_per_second"] > 0
    assert abs(sum(metrics["class_pixel_share"].values()) - 1) < 1e-3 and "road" in metrics["class_pixel_share"]
    assert (tmp_path / "data" / "raw" / "synthcity" / "snippets.csv").is_file()
    assert not [p for p in (tmp_path / "data" / "raw").iterdir() if p.name.startswith(".")]  # no temp dir left


@pytest.mark.parametrize("key,value", [("train_snippets", 0), ("val_snippets", 0), ("height", 63), ("width", 129),
                                       ("speed_min", -1.0), ("speed_max", 0.0), ("lead_car_share", 1.5),
                                       ("fps", 0.0), ("frame_offsets", [-1, 1]), ("frame_offsets", [0, 0, 1]),
                                       ("frame_offsets", [0, 11]), ("val_frame_offsets", [-1, 1]),
                                       ("val_frame_offsets", [0, 3]), ("val_frame_offsets", [0, 0]),
                                       ("lead_car_rel_speed", -0.5), ("lead_car_rel_speed", 5.5),
                                       ("lead_cars_max", 0), ("lead_cars_max", 9)])
def test_bad_params_are_rejected_with_the_key(key: str, value) -> None:
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["synth"][key] = value
    with pytest.raises(ConfigError) as e:
        parse_params(raw, "tiny.yaml")
    msg = str(e.value)
    assert "\n" not in msg and (f"synth.{key}" in msg or (key in ("height", "width") and "synth.height/width" in msg))


def test_render_is_fast_enough_to_matter() -> None:
    """Not a benchmark (benchmarks/synthcity.py is): a guard against per-pixel Python loops."""
    import time

    cfg = small_cfg(height=128, width=256)
    t0 = time.process_time()
    render_snippet(cfg, "val", 0)
    assert time.process_time() - t0 < 5.0


# World digests of snippets as drawn by the renderer before synth.lead_car_rel_speed and
# synth.lead_cars_max existed (same in every process: the draws are exact arithmetic on PCG64).
OLD_WORLDS = [
    (0.2, "train", 0, "71ddd9865c7aaeca"), (0.2, "train", 1, "b9b117d09b1a320b"),
    (0.2, "val", 0, "b599ef00feeacd59"), (0.2, "source", 0, "084e88c5321e1f5b"),
    (1.0, "train", 0, "c11f0767537ea3bd"), (1.0, "train", 1, "745a3a328db21a68"),
    (1.0, "val", 0, "81f9bd1898dbff6c"), (1.0, "source", 0, "7ee24dea432345e8"),
]


def _world_digest(scene) -> str:
    """sha256 (16 hex digits) of everything a snippet's world was drawn as: objects, parts, road,
    trajectory, ground zones, light and colours (and the meta keys that existed before)."""
    h = hashlib.sha256()
    o = scene.objects
    for arr in (o.s, o.l, o.v, o.rev, o.moving, *dataclasses.astuple(scene.parts)):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr(o.role).encode())
    for f in dataclasses.fields(scene):
        v = getattr(scene, f.name)
        if f.name in ("objects", "parts", "meta"):
            continue
        if f.name == "zones":
            for side in (1, -1):
                h.update(b"".join(a.tobytes() for a in v[side]))
        elif isinstance(v, np.ndarray):
            h.update(v.tobytes())
        else:
            h.update(repr(dataclasses.astuple(v) if dataclasses.is_dataclass(v) else v).encode())
    h.update(repr(sorted((k, scene.meta[k]) for k in ("curvature", "camera_height", "lead_gap",
                                                      "sun_elevation_deg"))).encode())
    return h.hexdigest()[:16]


def test_default_lead_params_draw_the_old_worlds() -> None:
    """rel speed 0 and one lead car reproduce the earlier worlds (and so, the renderer being
    deterministic, the earlier frames); a relative speed changes the lead car's speed and nothing else."""
    for share, split, index, digest in OLD_WORLDS:
        cfg = dataclasses.replace(SynthConfig(), lead_car_share=share)
        assert _world_digest(make_scene(cfg, split, index)) == digest, (share, split, index)
    base_cfg = small_cfg(lead_car_share=1.0)
    moved_cfg = dataclasses.replace(base_cfg, lead_car_rel_speed=1.0)
    base, moved = make_scene(base_cfg, "train", 0), make_scene(moved_cfg, "train", 0)
    assert _world_digest(moved) != _world_digest(base)  # the digest sees the speed
    lead = base.objects.role.index("lead")
    assert moved.objects.v[lead] != base.objects.v[lead]
    assert np.array_equal(np.delete(moved.objects.v, lead), np.delete(base.objects.v, lead))
    moved.objects.v[lead] = base.objects.v[lead]
    assert _world_digest(moved) == _world_digest(base)
    # frames: at t = 0 a car's speed does not matter, so the annotated frame is the default one
    (_, (f0,)), (_, (m0,)) = (render_snippet(c, "train", 0, offsets=[0]) for c in (base_cfg, moved_cfg))
    assert np.array_equal(f0.image, m0.image) and np.array_equal(f0.depth, m0.depth)
    # a snippet without a lead car is untouched by either parameter
    more = dataclasses.replace(small_cfg(), lead_car_rel_speed=2.0, lead_cars_max=4)
    assert not make_scene(small_cfg(), "train", 0).lead_car
    (_, a), (_, b) = (render_snippet(c, "train", 0, offsets=[-1, 1]) for c in (small_cfg(), more))
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.moving, y.moving) for x, y in zip(a, b))


def test_snippets_csv_records_lead_speeds_only_when_they_vary(written, tmp_path: Path) -> None:
    root, _, _ = written
    header = (root / "snippets.csv").read_text().splitlines()[0]
    assert header == "split,city,sequence,lead_car,speed,camera_height,curvature,frames,first_frame,last_frame"
    cfg = small_cfg(lead_car_share=1.0, lead_car_rel_speed=1.5, lead_cars_max=2, source_snippets=0)
    write_dataset(cfg, tmp_path / "lead", workers=1, progress=False)
    with (tmp_path / "lead" / "snippets.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["lead_car"] == "1" for r in rows)
    index = {(split, *snippet_name(split, i)): i for split in ("train", "val") for i in range(2)}
    for r in rows:
        scene = make_scene(cfg, r["split"], index[r["split"], r["city"], int(r["sequence"])])
        speeds = [float(v) for v in r["lead_rel_speeds"].split(";")]
        np.testing.assert_allclose(speeds, scene.meta["lead_rel_speeds"], atol=1e-4)
        assert all(abs(v) <= 1.5 for v in speeds) and 1 <= len(speeds) <= 2
    from semdepth.data.cityscapes import CityscapesRoot  # downsample reads the table with the extra column

    assert set(CityscapesRoot(tmp_path / "lead").lead_cars().values()) == {True}


# ------------------------------------------------------------------------------------------------
# val snippets with fewer frames (synth.val_frame_offsets)
# ------------------------------------------------------------------------------------------------
def test_val_frame_offsets_render_only_the_annotated_frame_and_downsample_takes_it(tmp_path: Path) -> None:
    import pandas as pd

    from semdepth.data.manifest import labelled_val, training_triplets, val_frames
    from semdepth.data.prepare import prepare

    cfg = small_cfg(train_snippets=1, val_snippets=2, source_snippets=1, val_frame_offsets=[0])
    root = tmp_path / "raw"
    summary = write_dataset(cfg, root, workers=1, progress=False)
    assert summary["frames"] == 5 + 2 + 1
    for kind in ("leftImg8bit_sequence", "depth", "pose", "moving", "leftImg8bit"):
        names = sorted(p.name for p in (root / kind / "val").rglob("*.*"))
        assert len(names) == 2 and all("_000019_" in n for n in names), (kind, names)
        assert len(list((root / kind / "train").rglob("*.*"))) == (1 if kind == "leftImg8bit" else 5)
    with (root / "snippets.csv").open(newline="") as f:
        rows = {r["split"] + r["city"]: r for r in csv.DictReader(f)}
    assert all(r["frames"] == "1" and r["first_frame"] == r["last_frame"] == "19"
               for r in rows.values() if r["split"] == "val")
    # the annotated val frame does not depend on how many neighbours val renders
    _, (full,) = render_snippet(dataclasses.replace(cfg, val_frame_offsets=cfg.frame_offsets), "val", 1, offsets=[0])
    city, seq = snippet_name("val", 1)
    img = cv2.imread(str(root / "leftImg8bit" / "val" / city / f"{city}_{seq:06d}_000019_leftImg8bit.png"))
    assert np.array_equal(img[..., ::-1], full.image)

    metrics = prepare(root, tmp_path / "prepared", 64, 128, [-2, -1, 0, 1, 2], ["train", "val", "source"], workers=1)
    assert metrics["snippets_skipped"] == 0 and metrics["frames"] == {"train": 5, "val": 2, "source": 1}
    m = pd.read_parquet(tmp_path / "prepared" / "manifest.parquet")
    val = m[m.split == "val"]
    assert len(val) == 2 and (val.offset == 0).all() and val.annotated.all()
    assert val.prev_image.isna().all() and val.next_image.isna().all()
    assert val.label.notna().all() and val.depth.notna().all() and val.depth_exact.notna().all()
    assert val.moving.notna().all() and val.pose.notna().all()
    assert len(val_frames(m)) == 2 and len(labelled_val(m)) == 2 and len(training_triplets(m)) == 3
