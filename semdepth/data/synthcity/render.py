"""One snippet, one frame: ray cast, shade, and produce the ground truth that goes with the image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semdepth.data.synthcity import shading
from semdepth.data.synthcity.camera import Intrinsics
from semdepth.data.synthcity.raycast import cast
from semdepth.data.synthcity.style import style_for
from semdepth.data.synthcity.scene import L, M_KERB, M_ROAD, M_SIDEWALK, M_TERRAIN, Scene
from semdepth.data.synthcity.world import build_scene

ANNOTATED_FRAME = 19  # Cityscapes' annotated frame index within a 30-frame snippet
SPLIT_STREAMS = {"train": 0, "val": 1, "source": 7919}  # seed streams; source is a separate stream
CITIES = {
    "train": ("ashford", "bramley", "corfe", "dunmere"),
    "val": ("elmley", "fenwick"),
    "source": ("gorsedale", "harrowby"),
}
_GROUND_LUT = np.zeros(10, np.uint8)  # ground material -> label id
_GROUND_LUT[[M_ROAD, M_SIDEWALK, M_KERB, M_TERRAIN]] = (L["road"], L["sidewalk"], L["sidewalk"], L["terrain"])


@dataclass
class Frame:
    offset: int  # frame - ANNOTATED_FRAME
    image: np.ndarray  # [H,W,3] uint8 RGB
    label: np.ndarray  # [H,W] uint8 Cityscapes label ids
    depth: np.ndarray  # [H,W] float32 metres (z-depth), 0 = invalid (sky, ego hood)
    moving: np.ndarray  # [H,W] bool independently moving objects
    instance: np.ndarray  # [H,W] int32 object index, -1 = none
    pose: np.ndarray  # 4x4 T_world_cam


def snippet_name(split: str, index: int) -> tuple[str, int]:
    cities = CITIES[split]
    return cities[index % len(cities)], index // len(cities)


def snippet_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_STREAMS[split], index])


def make_scene(cfg, split: str, index: int) -> Scene:
    """The world of snippet `index` of `split` (cfg: SynthConfig).

    The street spans `synth.frame_offsets` in every split, val too (whatever `val_frame_offsets`
    renders of it), so a val snippet's annotated frame does not depend on `val_frame_offsets`.
    """
    city, seq = snippet_name(split, index)
    before, after = max(0, -min(cfg.frame_offsets)) / cfg.fps, max(0, max(cfg.frame_offsets)) / cfg.fps
    return build_scene(split, index, city, seq, snippet_rng(cfg.seed, split, index), style_for(split),
                       (cfg.speed_min, cfg.speed_max), cfg.lead_car_share, before,
                       lead_rel_speed=cfg.lead_car_rel_speed, lead_cars_max=cfg.lead_cars_max, n_after=after)


def split_offsets(cfg, split: str) -> list[int]:
    """Frame offsets rendered for `split`, sorted: `source` only the annotated frame, `val`
    `synth.val_frame_offsets` (evaluation reads offset 0 only), `train` `synth.frame_offsets`."""
    if split == "source":
        return [0]
    return sorted(cfg.val_frame_offsets if split == "val" else cfg.frame_offsets)


def render_frame(scene: Scene, intr: Intrinsics, offset: int, fps: float, cam_dirs: np.ndarray | None = None,
                 hood: np.ndarray | None = None) -> Frame:
    """Render the frame `offset` frames after the annotated one."""
    h, w = intr.height, intr.width
    if cam_dirs is None:
        cam_dirs = intr.camera_rays()
    if hood is None:
        hood = shading.hood_mask(h, w)
    time = offset / fps
    pose = scene.traj.pose(time)
    hits = cast(scene, intr, cam_dirs, pose, time)
    t = hits.t.reshape(-1)
    gmat = hits.ground.reshape(-1)
    part = hits.part.reshape(-1)
    norm = np.sqrt(sum(c.reshape(-1) ** 2 for c in hits.dirs))  # |d| (rays are z-normalised, not unit)
    ux, uy, uz = (c.reshape(-1) / norm for c in hits.dirs)  # unit directions
    ox, oy, oz = (np.float32(v) for v in pose[:3, 3])
    lin = np.empty((h * w, 3), np.float32)
    label = np.full(h * w, L["sky"], np.uint8)
    hit = np.isfinite(t)
    dist_all = np.where(hit, t * norm, 0.0).astype(np.float32)

    gi = np.nonzero(gmat >= 0)[0]
    if len(gi):
        g, dist, d = gmat[gi], dist_all[gi], (ux[gi], uy[gi], uz[gi])
        p = (ox + dist * d[0], oy + dist * d[1], oz + dist * d[2])
        s, l = scene.road.to_local(p[0], p[1])
        kerb = (g == M_KERB).astype(np.float32)
        ang = s * np.float32(scene.road.curvature)
        side = np.sign(l) * kerb
        normal = (-side * np.cos(ang), side * np.sin(ang), 1.0 - kerb)
        cos = np.abs(normal[0] * d[0] + normal[1] * d[1] + normal[2] * d[2])
        f_l = dist / np.float32(intr.fx)  # footprint across the viewing direction ...
        f_s = f_l / np.maximum(cos, 0.01)  # ... and along it, stretched at grazing incidence
        albedo = shading.shade_ground(scene, g, p, s, l, f_s, f_l)
        lin[gi] = shading.light(scene, albedo, normal)
        label[gi] = _GROUND_LUT[g]

    pi = np.nonzero(part >= 0)[0]
    if len(pi):
        k, dist, d = part[pi], dist_all[pi], (ux[pi], uy[pi], uz[pi])
        p = (ox + dist * d[0], oy + dist * d[1], oz + dist * d[2])
        albedo, emit, normal = shading.shade_parts(scene, k, p, d, dist, intr.fx, hits.placement)
        lin[pi] = shading.light(scene, albedo, normal, emit)
        label[pi] = scene.parts.label[k]

    si = np.nonzero(~hit)[0]
    if len(si):
        lin[si] = shading.sky(scene, (ux[si], uy[si], uz[si]))
    haze = 1.0 - np.exp(dist_all * np.float32(-1.0 / scene.fog))  # 0 on the sky (dist 0)
    horizon = (scene.sky_horizon * 0.9).astype(np.float32)
    lin += (horizon[None] - lin) * haze[:, None]

    hood_flat = hood.reshape(-1)
    lin[hood_flat] = shading.hood_color(scene, h, w, hood)
    label[hood_flat] = L["ego vehicle"]
    depth = np.where(hit & ~hood_flat, t, 0.0).astype(np.float32)
    obj = np.where(part >= 0, scene.parts.obj[np.maximum(part, 0)], -1)
    obj[hood_flat] = -1
    moving = (obj >= 0) & scene.objects.moving[np.maximum(obj, 0)]
    rng = np.random.default_rng([scene.noise_seed, offset + 1000])
    image = shading.camera_response(scene, lin.reshape(h, w, 3), rng)
    return Frame(offset, image, label.reshape(h, w), depth.reshape(h, w), moving.reshape(h, w),
                 obj.reshape(h, w).astype(np.int32), pose)


def render_snippet(cfg, split: str, index: int, offsets: list[int] | None = None) -> tuple[Scene, list[Frame]]:
    """All frames of one snippet (`offsets` defaults to `split_offsets(cfg, split)`)."""
    scene = make_scene(cfg, split, index)
    intr = Intrinsics.cityscapes(cfg.height, cfg.width)
    if offsets is None:
        offsets = split_offsets(cfg, split)
    rays = intr.camera_rays()
    hood = shading.hood_mask(cfg.height, cfg.width)
    return scene, [render_frame(scene, intr, o, cfg.fps, rays, hood) for o in offsets]


def disparity_png(depth: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes uint16 disparity: p = round(256 * baseline * fx / depth) + 1; 0 = invalid."""
    valid = depth > 0
    d = np.zeros(depth.shape, np.float64)
    d[valid] = baseline * fx / depth[valid].astype(np.float64)
    p = np.where(valid, np.round(d * 256.0) + 1.0, 0.0)
    return np.clip(p, 0, 65535).astype(np.uint16)


__all__ = ["ANNOTATED_FRAME", "CITIES", "Frame", "disparity_png", "make_scene", "render_frame", "render_snippet",
           "snippet_name", "split_offsets"]
